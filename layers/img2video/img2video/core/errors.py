"""Pipeline errors: stable type names that the state machine matches, and their notice codes in one table."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipeline reports. `code` is the notice's error code."""

    code = "INTERNAL"
    transient = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after: float | None = None  # seconds, when the provider said when to come back


# Input problems: the user can fix these; they never reach the provider.
class InvalidSidecar(PipelineError):
    code = "INVALID_SIDECAR"


class InvalidManifest(PipelineError):
    """A batch manifest that cannot be read as a whole: not one of its lines becomes a job."""

    code = "INVALID_MANIFEST"


class MissingSidecar(PipelineError):
    code = "MISSING_SIDECAR"


class UnsupportedImage(PipelineError):
    code = "UNSUPPORTED_IMAGE"


class ImageTooLarge(PipelineError):
    code = "IMAGE_TOO_LARGE"


# Provider answers. The class names are the ASL error names; do not rename them.
class ProviderThrottled(PipelineError):
    code = "PROVIDER_FAILED"  # reported only once retries are spent
    transient = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderUnavailable(PipelineError):
    code = "PROVIDER_FAILED"  # reported only once retries are spent
    transient = True


class ProviderRejected(PipelineError):
    code = "PROVIDER_REJECTED"


class ProviderAuth(PipelineError):
    code = "PROVIDER_AUTH"


class InsufficientBalance(PipelineError):
    code = "INSUFFICIENT_BALANCE"


class ProviderFailed(PipelineError):
    code = "PROVIDER_FAILED"


class ProviderTimeout(PipelineError):
    code = "PROVIDER_TIMEOUT"


class DownloadInterrupted(PipelineError):
    """The video stream broke off or its URL expired; a fresh task-result call and a retry may fix it."""

    code = "DOWNLOAD_FAILED"
    transient = True


class DownloadFailed(PipelineError):
    code = "DOWNLOAD_FAILED"


class Cancelled(PipelineError):
    code = "CANCELLED"


class DailyLimitReached(PipelineError):
    """MaxSubmissionsPerDay held the job until no window with room opens within its submit window."""

    code = "DAILY_LIMIT"


class AwsTransient(PipelineError):
    """An AWS call failed in a way that a later try may not (throttling, 5xx, a lost connection)."""

    code = "INTERNAL"  # reported only once the state machine's retries are spent
    transient = True


# The error name (as Step Functions sees it) → the notice's error code: the one table every path uses.
# Transient errors reach it only once their retries are spent.
ERROR_CODES: dict[str, str] = {cls.__name__: cls.code for cls in PipelineError.__subclasses__()}

ALL_ERROR_CODES = (
    "INVALID_SIDECAR",
    "INVALID_MANIFEST",
    "MISSING_SIDECAR",
    "UNSUPPORTED_IMAGE",
    "IMAGE_TOO_LARGE",
    "PROVIDER_REJECTED",
    "PROVIDER_AUTH",
    "INSUFFICIENT_BALANCE",
    "PROVIDER_FAILED",
    "PROVIDER_TIMEOUT",
    "DOWNLOAD_FAILED",
    "CANCELLED",
    "DAILY_LIMIT",
    "INTERNAL",
)

# The errors every Task state retries before any Catch: AWS's own transient faults and Lambda's (service errors,
# timeouts and out-of-memory, a runtime that died: Runtime.ExitError after "signal: killed", Runtime.Unknown, and
# Lambda.Unknown). The ASL repeats this list in each state's first Retry; tests/template checks they stay identical.
TRANSIENT_AWS_ERRORS = (
    "AwsTransient",
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.ClientExecutionTimeoutException",
    "Lambda.Unknown",
    "Sandbox.Timedout",
    "Runtime.OutOfMemory",
    "Runtime.ExitError",
    "Runtime.Unknown",
    "States.Timeout",
)
# Lambda refusing an invocation for want of concurrency (an account's quota, a new account's 10) has a Retry of its
# own in every Lambda state, long enough that no job fails for it (tests/template checks how long).
LAMBDA_THROTTLED = ("Lambda.TooManyRequestsException",)


def error_code(error_name: str) -> str:
    """Map an error name (exception class or States.* name) to a notice error code."""
    return ERROR_CODES.get(error_name, "INTERNAL")
