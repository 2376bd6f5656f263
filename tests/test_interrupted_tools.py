"""What an interrupted tool leaves behind and says: --eval-only does not speak of resuming training;
a killed prepare's temp folder is reported by the next prepare and by data.check."""
from __future__ import annotations

import signal
from pathlib import Path


def test_sigterm_during_eval_only_does_not_promise_a_resume(tmp_path, monkeypatch, capsys):
    from amanet_fast.data.synthetic import ensure_synthetic
    from amanet_fast.training import loop
    from amanet_fast.training.cli import main

    syn = ensure_synthetic(tmp_path / "syn", seed=0, num_train=12, num_val=6)
    wd = tmp_path / "wd"
    assert main(["--preset", "tiny", "runtime.threads=1", "runtime.tensorboard=false", "train.epochs=1",
                 "--work-dir", str(wd), f"data.root={syn}"]) == 0
    capsys.readouterr()

    def killed(*a, **k):
        err = KeyboardInterrupt()
        err.signum = signal.SIGTERM
        raise err

    monkeypatch.setattr(loop, "evaluate_checkpoint", killed)
    rc = main(["--eval-only", "--checkpoint", str(wd / "latest.pt")])
    err = capsys.readouterr().err
    assert rc == 128 + signal.SIGTERM
    assert "SIGTERM" in err and "evaluation did not finish" in err and "resumes" not in err


def test_killed_prepare_temp_folder_is_reported(shared_data: Path, tmp_path, caplog):
    from amanet_fast.data.check import check_prepared
    from amanet_fast.data.prepare import main as prepare_main

    out = tmp_path / "out"
    (out / ".tmp-killed").mkdir(parents=True)
    assert prepare_main(["ntu60", "--split", "xview", "--raw", str(shared_data / "ntu_raw"), "--out", str(out)]) == 0
    # No owner record (an older version's folder): named, never removed (tests/data/test_interrupted_prepare.py
    # has the folders of killed prepares, which are removed).
    assert f"{out / '.tmp-killed'}: temp folder without an owner record" in caplog.text
    report = check_prepared(out)
    assert any(".tmp-killed" in w for w in report.warnings), report.warnings
    assert (out / ".tmp-killed").is_dir()
