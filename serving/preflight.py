"""What the service checks before it answers: the model and the published snapshot
belong together, and the publication is recent enough for the domain's clock."""

from __future__ import annotations

from datetime import date

from online_store.reader import NoSnapshot, Snapshot, describe_current, too_old
from scoring.served import ServedModel
from settings import Settings


class Incompatible(RuntimeError):
    """The model's feature catalogue differs from the published snapshot's."""


def check_compatible(served: ServedModel, snap: Snapshot) -> None:
    if served.model.catalogue_version != snap.catalogue_version:
        raise Incompatible(
            f"the model {served.tag} was trained on feature catalogue "
            f"{served.model.catalogue_version}, but the published snapshot {snap.path.name} "
            f"holds catalogue {snap.catalogue_version}; publish a snapshot with the current "
            "code (`credref publish`) or promote a model trained on it"
        )


def publication_readiness(s: Settings) -> dict:
    """The current publication against the domain's clock, as ``/readyz`` and ``credref
    serve`` say it: its name and day, its age, and a cause if it cannot be answered from."""
    try:
        meta = describe_current(s.online_path)
    except (NoSnapshot, ValueError):
        return {"cause": "no_publication"}
    today = s.domain_today()
    age = (today - date.fromisoformat(meta["as_of"])).days
    found = {
        "publication": meta["publication"],
        "as_of": meta["as_of"],
        "today": today.isoformat(),
        "age_days": age,
        "max_age_days": s.max_snapshot_age_days,
    }
    return {**found, "cause": "snapshot_stale"} if too_old(age, s.max_snapshot_age_days) else found
