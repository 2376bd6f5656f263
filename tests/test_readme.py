"""The README's commands, run in order in one folder, so README drift fails CI.

Every command of every ```bash block is either run here or listed in NOT_RUN with the reason.
A new README command that is neither fails `test_every_readme_command_is_run_or_explained`.

How the walk shortcuts what would take long or needs real data:
- raw inputs (`/path/to/...`, `../shared/data`, the example file names) are generated stand-ins
  in the same formats (tests/standin.py, the synthetic Kinetics writer, small pyskl pickles and
  array folders), so every prepare command runs its real reader;
- every train.py command without `--preset tiny` gets SHORT appended (1 epoch, 48 frames,
  narrow widths, a few clips): same recipes, presets and work dirs, seconds instead of hours.
  SHORT's widths differ from the tiny preset's, so a full run that fell into the tiny run's
  folder would be refused as a different setup, as it was before preset runs had their own.
- shell: `\\` continuations, `# comments`, `for s in ...; do ...; done`, `{a,b}` braces,
  `$s` and `> FILE` are expanded here; each command runs in-process through its `main(argv)`.
"""
from __future__ import annotations

import contextlib
import io
import json
import pickle
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT

README = REPO_ROOT / "README.md"

SHORT = ["train.epochs=1", "train.eval_every=1", "data.clip_len=48", "data.limit_train=8", "data.limit_val=4",
         "model.args.channels=[12,12,24]", "model.args.num_gcn_scales=2", "model.args.num_g3d_scales=2",
         "optim.batch_size=4", "optim.lr_steps=[]", "data.num_workers=0"]
PROTOCOL_PRESETS = ("standard", "cpu_standard")  # configs/ucla.yaml presets with data.resample
QUIET = ["runtime.threads=1", "runtime.tensorboard=false", "runtime.progress=false"]

# Commands not run here (matched by prefix after expansion), with why.
NOT_RUN = {
    "python3 -m venv": "set-up command (installs packages)",
    "torchrun": "several processes: the distributed path has its own tests (tests/training)",
    "pytest benchmarks/": "the benchmark suite: timings, run on its own",
    "pytest": "the test suite itself (this test is part of it)",
    "AMANET_SHARED_DATA=": "the test suite itself, with real sample files",
}
# Leading VAR=value assignments are applied to the environment of the command that follows.
ENV_PREFIX = re.compile(r"^((?:[A-Z_]+=\S+\s+)+)")


def readme_commands(text: str) -> list[str]:
    """The commands of the ```bash blocks, continuations joined, comments dropped, loops expanded."""
    cmds: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines = []
        for raw in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", raw).strip()
            if line:
                lines.append(line)
        i = 0
        while i < len(lines):
            m = re.fullmatch(r"for (\w+) in (.+); do", lines[i])
            if m:
                end = lines.index("done", i)
                for value in m.group(2).split():
                    cmds += [re.sub(rf"\${m.group(1)}\b", value, body) for body in lines[i + 1:end]]
                i = end + 1
                continue
            cmds.append(lines[i])
            i += 1
    return [c for word in cmds for c in [_braces(word)]]


def _braces(cmd: str) -> str:
    """bash brace expansion of words like work_dirs/x_{a,b} (one group per word)."""
    out = []
    for word in cmd.split(" "):
        m = re.fullmatch(r"(.*)\{([^{}]*,[^{}]*)\}(.*)", word)
        out += [f"{m.group(1)}{v}{m.group(3)}" for v in m.group(2).split(",")] if m else [word]
    return " ".join(out)


def _not_run(cmd: str) -> str | None:
    return next((why for prefix, why in NOT_RUN.items() if cmd.startswith(prefix)), None)


def test_every_readme_command_is_run_or_explained() -> None:
    runnable = ("python -m amanet_fast.", "python train.py")
    odd = [c for c in readme_commands(README.read_text())
           if not _not_run(c) and not ENV_PREFIX.sub("", c).startswith(runnable)]
    assert not odd, f"README commands this walk neither runs nor explains (add them to NOT_RUN or the runner): {odd}"


# --------------------------------------------------------------------------- the inputs the README names

def _inputs(root: Path, standin: Path) -> dict[str, str]:
    """Generate the README's raw inputs under root; returns README text -> replacement."""
    from amanet_fast.data.synthetic import write_synthetic_raw

    kin = write_synthetic_raw(root / "kinetics-skeleton", seed=0, num_train=12, num_val=6)
    ignore = root / "missing.txt"
    ignore.write_text("S001C001P001R001A050\n")  # the official list's format: one sample name per line
    for name in ("S001C001P001R001A010", "S001C001P001R001A011"):  # the example files predict/visualize read
        shutil.copy(standin / "ntu_raw" / "S001C001P001R001A001.skeleton", root / f"{name}.skeleton")
    with open(standin / "pyskl" / "example_UCF101_skeleton.pkl", "rb") as f:
        coco = pickle.load(f)
    anns = [dict(coco, frame_dir=f"c{i}", label=i % 2, keypoint=np.roll(coco["keypoint"], 5 * i, axis=1))
            for i in range(8)]
    with open(root / "annotations.pkl", "wb") as f:
        pickle.dump({"split": {"train": [f"c{i}" for i in range(6)], "val": ["c6", "c7"]}, "annotations": anns}, f)
    anns = []  # ann.pkl: 3D NW-UCLA-shaped clips, the skeleton my20.json (dumped from ucla20) describes
    for i, f in enumerate(sorted((standin / "nw_ucla" / "all_sqe").glob("*.json"))[:12]):
        kp = np.asarray(json.loads(f.read_text())["skeletons"], np.float32)[None]
        anns.append({"frame_dir": f.stem, "label": i % 3, "keypoint": kp, "total_frames": kp.shape[1]})
    with open(root / "ann.pkl", "wb") as f:
        pickle.dump({"split": {"train": [a["frame_dir"] for a in anns[:9]], "val": [a["frame_dir"] for a in anns[9:]]},
                     "annotations": anns}, f)
    clips = root / "my_clips"
    clips.mkdir()
    rows = ["file,label,split"]
    for i, a in enumerate(anns):
        np.save(clips / f"{a['frame_dir']}.npy", a["keypoint"][0])
        rows.append(f"{a['frame_dir']}.npy,{a['label'] + 1},{'train' if i < 9 else 'val'}")
    (clips / "labels.csv").write_text("\n".join(rows) + "\n")
    return {"/path/to/nturgb+d_skeletons": str(standin / "ntu_raw"),
            "/path/to/NTU_RGBD_samples_with_missing_skeletons.txt": str(ignore),
            "/path/to/kinetics-skeleton": str(kin), "/path/to/NW-UCLA": str(standin / "nw_ucla"),
            "../shared/data": str(standin), "/scratch/amanet": str(root / "cache")}


# --------------------------------------------------------------------------- the runner

def _main(cmd: list[str]):
    if cmd[:2] == ["python", "train.py"]:
        from amanet_fast.training.cli import main
        return main, cmd[2:]
    if cmd[:2] == ["python", "-m"]:
        import importlib
        return importlib.import_module(cmd[2]).main, cmd[3:]
    raise AssertionError(f"no runner for {cmd}")


def _run(cmd: str, subst: dict[str, str]) -> tuple[int, str]:
    for old, new in subst.items():
        cmd = cmd.replace(old, new)
    env = {}
    m = ENV_PREFIX.match(cmd)
    if m:
        env = dict(w.split("=", 1) for w in m.group(1).split())
        cmd = cmd[m.end():]
    words = shlex.split(cmd)
    target = None
    if ">" in words:
        k = words.index(">")
        words, target = words[:k], words[k + 1]
    main, argv = _main(words)
    if words[1] == "train.py" and "tiny" not in argv and "--eval-only" not in argv:
        # (--eval-only rebuilds the checkpoint's own model and data steps: nothing to shorten)
        short = SHORT
        if any(p in argv for p in PROTOCOL_PRESETS):  # whole-clip resampling sets the frames, not clip_len
            short = [("data.resample=24" if o.startswith("data.clip_len=") else o) for o in SHORT]
        argv = [*argv, *short]
    if words[1] == "train.py":
        argv = [*argv, *QUIET]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        rc = main(argv)
    if target is not None:
        Path(target).write_text(out.getvalue())
    return rc, out.getvalue()


@pytest.mark.slow
def test_readme_commands_run_in_order(standin_data, tmp_path, monkeypatch) -> None:
    root = tmp_path / "inputs"
    root.mkdir()
    subst = _inputs(root, standin_data)
    work = tmp_path / "clone"  # the folder a reader runs the README from
    work.mkdir()
    for f in root.glob("*.skeleton"):
        shutil.copy(f, work / f.name)
    for name in ("annotations.pkl", "ann.pkl"):
        shutil.copy(root / name, work / name)
    shutil.copytree(root / "my_clips", work / "my_clips")
    monkeypatch.chdir(work)
    monkeypatch.setenv("AMANET_DATA", str(work / "data"))
    ran = []
    for cmd in readme_commands(README.read_text()):
        if _not_run(cmd):
            continue
        rc, _ = _run(cmd, subst)
        assert rc == 0, f"README command failed (exit {rc}): {cmd}"
        ran.append(cmd)
    assert any("--preset tiny" in c for c in ran) and any(c.startswith("python -m amanet_fast.ensemble") for c in ran)
    # The tiny smoke run and the full run of the same data kept apart.
    assert (work / "work_dirs" / "custom_tiny_amanet_joint" / "latest.pt").is_file()
    assert (work / "work_dirs" / "custom_amanet_joint" / "best.pt").is_file()
