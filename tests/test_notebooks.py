"""Every notebook runs top to bottom (a real kernel) on a generated domain, and shows the
figure it is about: each run ends with a probe cell whose values the test checks against
the warehouse and the champion, computed here independently."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import service_env

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
pytestmark = pytest.mark.slow

#: What each notebook's probe prints (as JSON), from the notebook's own variables.
PROBES = {
    "01-records": '{"as_of": str(as_of), "operating": len(ages)}',
    "02-features": '{"as_of": str(as_of), "operating": len(snap), "features": list(cat.feature), "reach": {k: int(v) for k, v in reach.items()}, "examples": examples.feature.value_counts().to_dict()}',
    "03-model": '{"version": str(champ.version), "rows": len(rows), "d_share": float((scores.risk_class == "D").mean())}',
    "04-monitoring": '{"as_of": report["as_of"], "operating": report["rows"]["current"], "features": sorted(report["feature_csi"]), "matured": len(report["backtest"])}',
    "05-german-credit": '{"spec": SPEC.name, "registered": str(result.version), "auc": result.test_metrics["auc"], "logistic_auc": lr, "classes": sorted(set(scored.risk_class))}',
}


def _expected(home: Path) -> dict:
    """The same figures computed here, from the warehouse and the champion's files."""
    import duckdb
    import mlflow
    import pandas as pd

    from features.catalogue import FEATURE_NAMES
    from features.dataset import observed_through
    from features.pit import population_sql
    from scoring.model import ScoringModel

    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    as_of = observed_through(con)
    operating = con.execute(f"SELECT count(*) FROM ({population_sql(as_of)})").fetchall()[0][0]
    con.close()
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    version = mlflow.MlflowClient().get_model_version_by_alias("credref-reference", "champion")
    model_dir = Path(
        mlflow.artifacts.download_artifacts(f"models:/credref-reference/{version.version}")
    )
    model = ScoringModel.load(model_dir / "artifacts" / "scoring_model")
    rows = pd.read_parquet(home / "test_rows.parquet")
    d_share = float((model.score_frame(rows[list(FEATURE_NAMES)]).risk_class == "D").mean())
    return {
        "as_of": str(as_of),
        "operating": operating,
        "rows": len(rows),
        "d_share": d_share,
        "version": str(version.version),
    }


def test_there_are_five_notebooks_with_outputs_stripped():
    assert [p.name for p in NOTEBOOKS] == [
        "01-records.ipynb",
        "02-features.ipynb",
        "03-model.ipynb",
        "04-monitoring.ipynb",
        "05-german-credit.ipynb",
    ]
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, p.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_notebook_runs(path, service_home, tmp_path, monkeypatch):
    for k, v in service_env(service_home).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(
        nbformat.v4.new_code_cell(f"import json as _j\nprint(_j.dumps({PROBES[path.stem]}))")
    )
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    assert any(
        o.output_type in ("execute_result", "display_data")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    probe = json.loads(nb.cells[-1].outputs[-1]["text"])
    expected = _expected(service_home)
    for key in ("as_of", "operating", "rows", "version"):
        if key in probe:
            assert probe[key] == expected[key], key
    if "features" in probe:
        from features.catalogue import FEATURE_NAMES

        assert sorted(probe["features"]) == sorted(FEATURE_NAMES)
    if "logistic_auc" in probe:  # the foreign catalogue: registered, and near the yardstick
        from examples.german_credit import Rotation, logistic_auc, read, with_fold_dates

        assert probe["spec"] == "german-credit" and probe["registered"] == "1"
        assert probe["logistic_auc"] == pytest.approx(
            logistic_auc(with_fold_dates(read(), 0), Rotation(0))
        )
        assert abs(probe["auc"] - probe["logistic_auc"]) < 0.05 and len(probe["classes"]) >= 3
    if "reach" in probe:  # the last chart means something: counts over every household
        reach, examples = probe["reach"], probe["examples"]
        assert reach and len(set(reach.values())) > 1, reach
        assert all(reach[f] >= n for f, n in examples.items()) and max(reach.values()) > 5
    if "matured" in probe:  # the notebook's report is `credref monitor`'s, to the count
        import duckdb
        import pandas as pd

        from governance.monitor import gather  # with the CLI's defaults

        con = duckdb.connect(str(service_home / "warehouse.duckdb"), read_only=True)
        cli = gather(con, date.fromisoformat(probe["as_of"]), pd.DataFrame())
        con.close()
        assert probe["matured"] == len(cli.matured) >= 2
    if "d_share" in probe:
        assert probe["d_share"] == pytest.approx(expected["d_share"], abs=1e-12)
