//! The operator dashboard: a single page (`/`, `/ui/app.js`, `/ui/app.css`) embedded in the
//! binary. It uses only the public HTTP API. These static routes are not part of the API
//! (not in [`super::ROUTES`] nor the OpenAPI document) and need no token: they hold no data,
//! and the page sends the token with its API calls.

use axum::http::header;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// `(path, content type, body)` of every static file.
pub const FILES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("ui/index.html"),
    ),
    (
        "/ui/app.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/app.js"),
    ),
    (
        "/ui/app.css",
        "text/css; charset=utf-8",
        include_str!("ui/app.css"),
    ),
];

/// Whether `path` is one of the dashboard's static files.
pub fn is_static(path: &str) -> bool {
    FILES.iter().any(|(p, _, _)| *p == path)
}

pub(crate) async fn serve(uri: Uri) -> Response {
    match FILES.iter().find(|(p, _, _)| *p == uri.path()) {
        Some((_, ctype, body)) => (
            [
                (header::CONTENT_TYPE, *ctype),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                ),
            ],
            *body,
        )
            .into_response(),
        None => ApiError::not_found("Not Found").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_files_are_known_and_not_api_routes() {
        assert!(is_static("/") && is_static("/ui/app.js") && is_static("/ui/app.css"));
        assert!(!is_static("/api/absurd/health") && !is_static("/ui/"));
        for (path, _, body) in FILES {
            assert!(!body.is_empty(), "{path}");
            assert!(!super::super::ROUTES.iter().any(|(_, p)| p == path));
        }
        // The page loads its script and style from the paths served here, not from a CDN.
        let html = FILES[0].2;
        assert!(html.contains("src=\"/ui/app.js\"") && html.contains("href=\"/ui/app.css\""));
        assert!(!html.contains("https://"));
    }
}
