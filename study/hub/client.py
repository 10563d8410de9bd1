"""Talking to the hub through ``huggingface_hub``: which endpoint, whether to go online, and its errors said in
one line each.

The endpoint is read from ``HF_ENDPOINT`` when a command runs (``huggingface_hub`` reads it once, at import):
a mirror, or the local hub of the tests, is then used by every call, including the ones ``huggingface_hub``
makes inside ``get_safetensors_metadata``. Offline mode is ``huggingface_hub``'s own (``HF_HUB_OFFLINE``).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

from study.errors import UserError


class HubUnreachable(UserError):
    """The hub could not be reached (offline mode, no network, a wrong ``HF_ENDPOINT``)."""


def endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def hub_api() -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint())


@contextmanager
def quiet() -> Iterator[None]:
    """No ``huggingface_hub`` progress bars (it draws one per sharded header read); ours are drawn by ``fetch``."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was:
            enable_progress_bars()


def unreachable_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the hub was not reached, as opposed to an answer from it."""
    import httpx2
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    return httpx2.ConnectError, httpx2.TimeoutException, OfflineModeIsEnabled, LocalEntryNotFoundError


def explain(exc: BaseException, label: str, repo: str) -> UserError:
    """A ``huggingface_hub`` error as one line naming the model and what to do; ``HubUnreachable`` when the hub
    was not reached at all."""
    from huggingface_hub import errors

    page = f"{endpoint()}/{repo}"
    if isinstance(exc, unreachable_errors()):
        return HubUnreachable(f"the hub at {endpoint()} cannot be reached ({type(exc).__name__}): check the network "
                              f"and HF_ENDPOINT, or work offline from the local cache (HF_HUB_OFFLINE=1)")
    if isinstance(exc, errors.GatedRepoError):
        status = getattr(getattr(exc, "response", None), "status_code", 401)
        who = ("your token has not been granted access yet" if status == 403
               else "no token was sent: log in with `hf auth login` or set HF_TOKEN")
        return UserError(f"{label}: gated on the hub ({who}): accept its conditions at {page}, then fetch again")
    if isinstance(exc, errors.RevisionNotFoundError):
        return UserError(f"{label}: no such revision on the hub: check it (a branch, tag or commit of {page})")
    if isinstance(exc, errors.DisabledRepoError):
        return UserError(f"{label}: disabled on the hub ({page}): replace it")
    if isinstance(exc, errors.RepositoryNotFoundError):
        return UserError(f"{label}: not found on the hub at {endpoint()} (no such id, or a private repo your token "
                         f"cannot read): check the id, or log in with `hf auth login`")
    if isinstance(exc, errors.NotASafetensorsRepoError):
        return UserError(f"{label}: no safetensors weights on the hub (neither model.safetensors nor "
                         f"model.safetensors.index.json): merges read safetensors only; pick a repo that has them")
    if isinstance(exc, errors.SafetensorsParsingError):
        return UserError(f"{label}: unreadable safetensors header on the hub: {str(exc).splitlines()[0]}")
    if isinstance(exc, errors.RemoteEntryNotFoundError):
        return UserError(f"{label}: a file the checks need is missing from the repo ({str(exc).splitlines()[-1]})")
    if isinstance(exc, errors.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        return UserError(f"{label}: the hub answered HTTP {status} ({str(exc).splitlines()[0]}): try again later")
    raise exc
