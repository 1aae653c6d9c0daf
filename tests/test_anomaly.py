"""python -m training.anomaly: the one-class protocol, its table beside the paper's, and the report."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from training import anomaly

DOCS = Path(__file__).resolve().parent.parent / "docs" / "anomaly.md"


def test_the_paper_rows_average_to_the_published_means() -> None:
    means = {name: sum(values) / 10 for name, values in anomaly.PAPER.items()}
    assert means == pytest.approx(
        {"KDE": 86.93, "IF": 92.30, "OC-SVM": 91.29, "DCAE": 89.65, "Deep SVDD (one-class)": 94.80}, abs=0.005
    )


def test_the_table_puts_our_rows_beside_the_papers() -> None:
    rows = [
        anomaly.Row("seed", ((70.0, 99.0),)),
        anomaly.Row("dense", ((99.0, 99.9), (98.0, 99.7), (97.0, 99.5))),
    ]
    table = anomaly.format_table(rows, (0, 1)).splitlines()
    assert table[0] == "| method | 0 | 1 | mean |"
    assert "| DCAE (Ruff et al. 2018) | 97.6 | 98.3 | 97.95 |" in table
    assert table[-2] == "| **seed**, this repo, 1 seed | 70.0 ± 0.0 | 99.0 ± 0.0 | **84.50 ± 0.00** |"
    # per digit: mean ± standard deviation over seeds; the last column: the same of the seeds' means
    assert table[-1] == "| **dense**, this repo, 3 seeds | 98.0 ± 1.0 | 99.7 ± 0.2 | **98.85 ± 0.60** |"


@pytest.mark.integration
def test_a_short_run_reports_an_auroc_per_architecture(
    tmp_path: Path, mnist_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "anomaly.md"
    shutil.copy(DOCS, report)
    argv = ["--digits", "1", "--epochs", "1", "--seeds", "0", "1", "--architectures", "dense8", "seed"]
    argv += ["--data-dir", str(mnist_dir), "--report", str(report)]
    assert anomaly.main(argv) == 0
    out = capsys.readouterr().out
    text = report.read_text()
    assert text.count(anomaly.MARKERS[0]) == 1 and text.count(anomaly.MARKERS[1]) == 1
    assert "`python -m training.anomaly --digits 1 --epochs 1" in text and "1 epochs" in text and "seeds 0, 1" in text
    ours = [line for line in text.splitlines() if "this repo" in line]
    assert len(ours) == len(anomaly.ARCHITECTURES)
    for line in ours:  # digit 1 against the rest: easy for either architecture after one epoch
        assert "2 seeds" in line
        auroc = float(line.split("|")[2].split("±")[0])
        assert 80 <= auroc <= 100, line
    assert "min in all" in out
    assert outside_the_table(text) == outside_the_table(DOCS.read_text()), "only the table was rewritten"


def outside_the_table(text: str) -> str:
    start, end = anomaly.MARKERS
    return text[: text.index(start)] + text[text.index(end) :]
