-- absurd-host schema, part 8: wake-up notifications for idle workers (an absurd-host addition;
-- upstream Absurd workers only poll, and keep working unchanged since nothing here is required).
--
-- Channel: absurd_wakeup
-- Payload: the queue name, verbatim (at most 57 bytes, well under the 8000-byte payload limit).
--
-- Sent by every function that makes a run claimable now or gives it a new wake-up time:
-- spawn_task, emit_event (when it wakes at least one run), fail_run (when it schedules a retry),
-- retry_task (in place; spawn_new goes through spawn_task), schedule_run, and await_event with a
-- timeout. An idle worker receiving it claims, and if nothing is due yet, re-arms its timer for
-- the queue's earliest available_at, so sleeps and back-offs end on time, not on a poll tick.
--
-- Notifications are delivered only when the transaction commits, and Postgres folds identical
-- (channel, payload) pairs within one transaction, so spawning a batch in one transaction sends one
-- notification per queue. A listener must still poll as a fallback: notifications can be lost
-- (e.g. across a reconnect) and are only a hint that claim_task may find work.
create function absurd._host_notify_ready(p_queue_name text) returns void
language sql
as $$ select pg_notify('absurd_wakeup', p_queue_name) $$;
