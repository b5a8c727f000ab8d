"""The workspace (config file or environment), the MLClient, and secrets: every message and
stream that reaches the user passes a `Redactor`; the SDK's DEBUG logging is never on."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import sys
from pathlib import Path

from bert_tf.errors import UsageError


WORKSPACE_ENV = ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME")


@dataclasses.dataclass(frozen=True)
class Workspace:
    subscription_id: str
    resource_group: str
    workspace_name: str
    source: str  # where it came from, for messages (never the values)


_HOW_TO_CONFIGURE = ("pass --config PATH (the workspace's config.json: Azure portal, the "
                     "workspace's Overview, 'Download config.json'), put it in ./config.json or "
                     "./.azureml/config.json, or set AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP "
                     "and AZUREML_WORKSPACE_NAME")


def _read_config(path: Path) -> Workspace:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"--config {path}: cannot read it as JSON ({type(e).__name__})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"--config {path}: expected a JSON object")
    scope = raw.get("Scope") or raw.get("scope")
    if scope:
        m = re.search(r"/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/"
                      r"Microsoft\.MachineLearningServices/workspaces/([^/]+)", scope, re.I)
        if m:
            return Workspace(*m.groups(), source=str(path))
    missing = [k for k in ("subscription_id", "resource_group", "workspace_name") if not raw.get(k)]
    if missing:
        raise UsageError(f"{path}: not a workspace config (no {', '.join(missing)}); "
                         + _HOW_TO_CONFIGURE)
    return Workspace(str(raw["subscription_id"]), str(raw["resource_group"]),
                     str(raw["workspace_name"]), source=str(path))


def find_workspace(config: str | None) -> Workspace:
    """--config, else the three environment variables, else config.json / .azureml/config.json
    in the working folder or a parent. Raises UsageError saying how to provide one."""
    if config:
        path = Path(config).expanduser()
        if not path.is_file():
            raise UsageError(f"--config {config}: no such file; " + _HOW_TO_CONFIGURE)
        return _read_config(path)
    values = [os.environ.get(k, "").strip() for k in WORKSPACE_ENV]
    if all(values):
        return Workspace(*values, source="environment")
    if any(values):
        missing = [k for k, v in zip(WORKSPACE_ENV, values) if not v]
        raise UsageError(f"{', '.join(missing)} not set (the workspace is read from "
                         f"{', '.join(WORKSPACE_ENV)} together)")
    folder = Path.cwd().resolve()
    for candidate in (folder, *folder.parents):
        for path in (candidate / "config.json", candidate / ".azureml" / "config.json"):
            if path.is_file():
                return _read_config(path)
    raise UsageError("no Azure ML workspace configured: " + _HOW_TO_CONFIGURE)


class Redactor:
    """Removes what must never be printed: the subscription id (from the workspace and the
    environment), /subscriptions/<guid> in any ARM id or studio link, bearer tokens, JWTs and
    signed-URL keys."""

    _PATTERNS = [
        (re.compile(r"(/subscriptions/)[0-9a-fA-F-]{36}", re.I), r"\1<redacted>"),
        (re.compile(r"(Bearer\s+)[\w.~+/=-]+", re.I), r"\1<redacted>"),
        (re.compile(r"eyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]+"), "<redacted-token>"),
        (re.compile(r"\b((?:sig|signature|sas|key|token|secret|password|client_secret|"
                    r"access_token)=)[^&\s\"']+", re.I), r"\1<redacted>"),
        (re.compile(r"(AccountKey=)[^;\s]+", re.I), r"\1<redacted>"),
    ]

    def __init__(self):
        self.secrets = {os.environ.get("AZURE_SUBSCRIPTION_ID", "").strip()} - {""}

    def add(self, secret: str | None) -> None:
        if secret and secret.strip():
            self.secrets.add(secret.strip())

    def __call__(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = re.sub(re.escape(secret), "<subscription-id>", text, flags=re.I)
        for pattern, repl in self._PATTERNS:
            text = pattern.sub(repl, text)
        return text


class _RedactingStream:
    """A line-buffered stand-in for stdout/stderr while the SDK runs: it prints studio links
    (`Web View: https://ml.azure.com/...?wsid=/subscriptions/...`) by itself."""

    def __init__(self, stream, redact: Redactor):
        self._stream, self._redact, self._buffer = stream, redact, ""

    def write(self, text):
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self._stream.write(self._redact(line) + "\n")
        return len(text)

    def flush(self):
        if self._buffer:
            self._stream.write(self._redact(self._buffer))
            self._buffer = ""
        self._stream.flush()

    def isatty(self):
        return False

    def __getattr__(self, name):
        return getattr(self._stream, name)


class AzureFailure(Exception):
    """Azure (or the SDK) refused or failed; the message is redacted and on one line."""


@contextlib.contextmanager
def talking_to_azure(redact: Redactor, what: str):
    """Run SDK calls with stdout/stderr redacted; any SDK exception becomes one AzureFailure
    line (a UsageError passes through)."""
    quiet_azure_logging()
    out, err = _RedactingStream(sys.stdout, redact), _RedactingStream(sys.stderr, redact)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                yield
            finally:
                out.flush()
                err.flush()
    except (UsageError, KeyboardInterrupt, AzureFailure):
        raise
    except Exception as e:  # noqa: BLE001 (whatever the SDK raises: one line, redacted)
        message = " ".join(str(e).split())
        if type(e).__name__ == "ClientAuthenticationError":
            message = ("no Azure credential (DefaultAzureCredential): sign in with `az login`, or "
                       "set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET. "
                       + message.split(". ")[0])
        if len(message) > 600:
            message = message[:600] + " ..."
        raise AzureFailure(redact(f"{what}: {type(e).__name__}: {message}")) from None


def make_client(workspace: Workspace):
    """An MLClient for the workspace with DefaultAzureCredential. Constructing either sends
    nothing; the first operation requests a token."""
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    return MLClient(DefaultAzureCredential(), workspace.subscription_id,
                    workspace.resource_group, workspace.workspace_name)


def quiet_azure_logging() -> None:
    """The Azure SDK's loggers stay at WARNING or above whatever the root logger says: their
    DEBUG records include request headers, bearer tokens among them. The credential and pipeline
    loggers (azure.identity, azure.core, msal) stay at ERROR: their warnings repeat, over a dozen
    lines, what the exception says (DefaultAzureCredential's every attempt), and a failure is
    the one line talking_to_azure makes of the exception. So does the SDK's "This is an
    experimental class" chatter, printed while a job is validated."""
    for name in ("azure", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("azure.identity", "azure.core", "azure.core.pipeline.policies.http_logging_policy",
                 "msal", "azure.ai.ml._utils._experimental"):
        logging.getLogger(name).setLevel(logging.ERROR)


def require_azureml_mlflow() -> None:
    """A workspace's MLflow store (azureml://...) is read through the azureml-mlflow plugin."""
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        raise UsageError("download reads the trials through MLflow: pip install mlflow-skinny")
    try:
        plugin = importlib.util.find_spec("azureml.mlflow")
    except ModuleNotFoundError:
        plugin = None
    if plugin is None:
        raise UsageError("download reads the workspace's MLflow store, which needs the Azure ML "
                         "plugin: pip install azureml-mlflow (or pip install -e '.[azure]')")
