"""A results page written by the bench itself: title, command, machine, date, the table and the plots.

``accel bench ... --page docs/results/NAME.md`` writes ``NAME.md`` with ``NAME-pareto.png`` and
``NAME-grid.png`` beside it, so a page in docs/ always shows a run as the bench reported it.
"""
from __future__ import annotations

import datetime
import shutil
from pathlib import Path


def command_line(argv: list[str]) -> str:
    """The command as a user would type it: the program's name without its install path."""
    import shlex

    prog = Path(argv[0]).name if argv else "accel"
    prog = "accel" if prog in ("accel", "__main__.py", "cli.py") else prog
    return " ".join([prog, *(shlex.quote(a) for a in argv[1:])])


def machine_line(meta: dict) -> str:
    """One line naming the machine a run was measured on (device, threads, processor, versions)."""
    m = meta.get("machine", {})
    parts = [f"device {meta.get('device', '?')}", f"{meta.get('threads', '?')} threads",
             f"{meta.get('processes', 1)} process(es)", m.get("processor", ""), m.get("platform", ""),
             f"torch {m.get('torch', '?')}", f"diffusers {m.get('diffusers', '?')}"]
    if m.get("transformers"):
        parts.append(f"transformers {m['transformers']}")
    return ", ".join(p for p in parts if p)


def subject(meta: dict) -> str:
    """What a run generated, from its results.json config: ``"100 images"`` or ``"2 clips of 5 frames, 32x32 at
    16 fps"``."""
    clips = meta.get("clips")
    if not clips:
        return f"{meta.get('num_images')} images"
    return (f"{meta.get('num_images')} clips of {clips['frames']} frames, {clips['width']}x{clips['height']} at "
            f"{clips['fps']} fps")


def write_page(path: str | Path, table_md: str, meta: dict, out_dir: str | Path, title: str | None = None,
               date: datetime.date | None = None) -> Path:
    """Write a results page at ``path`` from a finished run in ``out_dir`` (its table, config and plots)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    title = title or f"{path.stem.replace('-', ' ').replace('_', ' ').capitalize()}"
    lines = [f"# {title}", "", f"Written by `accel bench` on {(date or datetime.date.today()).isoformat()}.", "",
             f"- Command: `{meta.get('command', '')}`", f"- Machine: {machine_line(meta)}",
             f"- Pipeline {meta.get('pipeline')}, {subject(meta)}, {meta.get('steps')} steps, "
             f"guidance {meta.get('guidance')}, seed {meta.get('seed')}, {meta.get('dtype')}", "",
             table_md.strip(), ""]
    for kind in ("pareto", "grid"):
        src = Path(out_dir) / f"{kind}.png"
        if src.exists():
            dst = path.with_name(f"{path.stem}-{kind}.png")
            shutil.copyfile(src, dst)
            lines += [f"![{kind}]({dst.name})", ""]
    path.write_text("\n".join(lines))
    return path
