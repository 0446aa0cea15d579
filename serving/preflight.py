"""Checks that the model and the published snapshot belong together."""

from __future__ import annotations

from online_store.reader import Snapshot
from scoring.served import ServedModel


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
