from dataclasses import dataclass
from enum import Enum
from typing import Optional


@dataclass
class TaskInfo:
    task_id: str
    run_id: str
    attempt: int
    queue: str
    task_name: str
    headers: Optional[str]


class ErrorKind(Enum):
    RETRYABLE = 0
    PERMANENT = 1


@dataclass
class TaskError:
    kind: ErrorKind
    name: str
    message: str
    details: Optional[str]
