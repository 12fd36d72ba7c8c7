"""A partial mujoco_menagerie, built offline from the mjlab wheel's meshes: Playground's 7 Go1/G1 envs without git.

Playground's locomotion and manipulation envs read their robots from a mujoco_menagerie checkout, which needs a
``git clone`` (network). The Unitree Go1 and G1 XMLs of Playground's ``Go1*`` (5 envs) and ``G1*`` (2 envs) read
nothing from it but ``unitree_go1/assets`` and ``unitree_g1/assets``, and the mjlab wheel on PyPI (Apache-2.0; the
meshes are Menagerie's, BSD-3) ships exactly those meshes. This module downloads that wheel with pip (``--no-deps``,
never importing mjlab) or takes one you downloaded elsewhere, and extracts only the two mesh folders::

    python -m playground_gym.menagerie ~/partial_menagerie          # prints the export line to use
    export PLAYGROUND_GYM_MENAGERIE_PATH=~/partial_menagerie

A full Menagerie checkout covers all 29 locomotion and manipulation envs; :func:`missing_robots` says what an env
needs that a given folder lacks, and loading such an env fails with an error naming the missing robot folder.

Examples:
    >>> from playground_gym import menagerie
    >>> menagerie.robots_of("Go1JoystickFlatTerrain")
    ('unitree_go1',)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from playground_gym import configs
from playground_gym.configs import list_envs, resolve_env_id, suite_of

__all__ = ["MJLAB_REQUIREMENT", "PARTIAL_ROBOTS", "build_partial", "covered_envs", "missing_robots", "robots_of"]

MJLAB_REQUIREMENT = "mjlab==1.6.0"
# robot folder in mujoco_menagerie -> the folder inside the mjlab wheel holding its meshes (both read as <robot>/assets)
PARTIAL_ROBOTS = {
    "unitree_go1": "mjlab/asset_zoo/robots/unitree_go1/xmls/assets/",
    "unitree_g1": "mjlab/asset_zoo/robots/unitree_g1/xmls/assets/",
}
MARKER = "PARTIAL_MENAGERIE.json"

# Playground's env package -> the Menagerie folders its XMLs read (mujoco_playground/_src/*/<package>/*.py)
_PACKAGE_ROBOTS = {
    "go1": ("unitree_go1",), "g1": ("unitree_g1",), "h1": ("unitree_h1",), "apollo": ("apptronik_apollo",),
    "barkour": ("google_barkour_vb",), "berkeley_humanoid": ("berkeley_humanoid",), "op3": ("robotis_op3",),
    "spot": ("boston_dynamics_spot",), "t1": ("booster_t1",), "aloha": ("aloha",),
    "franka_emika_panda": ("franka_emika_panda",),
    "franka_emika_panda_robotiq": ("franka_emika_panda", "robotiq_2f85_v4"),
    "leap_hand": ("leap_hand",), "aero_hand": ("tetheria_aero_hand_open",),
}


def robots_of(env_id: str) -> tuple[str, ...]:
    """The mujoco_menagerie folders an env reads (empty for DM Control, whose XMLs ship with Playground).

    Raises:
        KeyError: an env of a Playground package this table does not know (a newer Playground).
    """
    name = resolve_env_id(env_id)
    suite = suite_of(name)
    if suite == "dm_control_suite":
        return ()
    def package_of() -> str:
        from mujoco_playground._src import locomotion, manipulation

        target = (locomotion if suite == "locomotion" else manipulation)._envs[name]
        return getattr(target, "func", target).__module__.split(".")[3]

    package = configs.remembered("package", name, package_of)  # read from Playground once, then from the snapshot
    if package not in _PACKAGE_ROBOTS:
        raise KeyError(f"{name}: its Playground package {package!r} is not in playground_gym.menagerie's table")
    return _PACKAGE_ROBOTS[package]


def missing_robots(env_id: str, menagerie: str | os.PathLike[str]) -> list[str]:
    """The robot folders of ``env_id`` that ``menagerie`` lacks (a folder without files counts as missing)."""
    root = Path(menagerie)
    return [r for r in robots_of(env_id) if not (root / r).is_dir() or not any((root / r).rglob("*.*"))]


def covered_envs(menagerie: str | os.PathLike[str]) -> list[str]:
    """The locomotion and manipulation envs whose robot folders are all in ``menagerie``."""
    return [name for suite in ("locomotion", "manipulation") for name in list_envs(suite)
            if not missing_robots(name, menagerie)]


def _download_wheel(into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet", "-d", str(into),
           MJLAB_REQUIREMENT]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(into.glob("mjlab-*.whl"))
    if proc.returncode or not wheels:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(f"could not download {MJLAB_REQUIREMENT} with pip ({detail[-1] if detail else 'no wheel'}); "
                           f"download it on a machine with network (pip download --no-deps {MJLAB_REQUIREMENT}) and "
                           f"pass it with --wheel / wheel=")
    return wheels[-1]


def build_partial(directory: str | os.PathLike[str], wheel: str | os.PathLike[str] | None = None) -> Path:
    """Fill ``directory`` with ``unitree_go1/assets`` and ``unitree_g1/assets`` from the mjlab wheel; return it.

    Args:
        directory: the folder to build (created; existing files of the same names are overwritten). It is what
            ``PLAYGROUND_GYM_MENAGERIE_PATH`` then names.
        wheel: an mjlab wheel file; ``None`` downloads ``mjlab==1.6.0`` with pip (no dependencies, not installed).

    Raises:
        FileNotFoundError: ``wheel`` does not exist.
        ValueError: the wheel holds none of the expected mesh folders (not an mjlab wheel, or another layout).
        RuntimeError: the download failed (the message says how to pass a wheel instead).

    Examples:
        >>> path = build_partial("/tmp/partial_menagerie")  # doctest: +SKIP
    """
    target = Path(directory).expanduser().resolve()
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            source = _download_wheel(Path(tmp))
        else:
            source = Path(wheel).expanduser()
            if not source.is_file():
                raise FileNotFoundError(f"wheel: expected an mjlab wheel file; {source} does not exist")
        counts = {}
        with zipfile.ZipFile(source) as archive:
            for robot, prefix in PARTIAL_ROBOTS.items():
                members = [m for m in archive.namelist() if m.startswith(prefix) and not m.endswith("/")]
                for member in members:
                    out = target / robot / "assets" / member[len(prefix):]
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(archive.read(member))
                counts[robot] = len(members)
        if not all(counts.values()):
            empty = [robot for robot, n in counts.items() if not n]
            raise ValueError(f"wheel: {source.name} has no meshes under {[PARTIAL_ROBOTS[r] for r in empty]}; "
                             f"expected an mjlab wheel ({MJLAB_REQUIREMENT})")
        (target / MARKER).write_text(json.dumps({"source": source.name, "meshes": counts,
                                                 "envs": covered_envs(target)}, indent=1) + "\n")
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m playground_gym.menagerie", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="folder to build (PLAYGROUND_GYM_MENAGERIE_PATH then names it)")
    parser.add_argument("--wheel", help=f"an mjlab wheel downloaded elsewhere (default: pip download "
                                        f"{MJLAB_REQUIREMENT})")
    args = parser.parse_args(argv)
    path = build_partial(args.directory, args.wheel)
    envs = covered_envs(path)
    print(f"partial mujoco_menagerie in {path}: {len(envs)} envs ({', '.join(envs)})")
    print(f"export PLAYGROUND_GYM_MENAGERIE_PATH={path}")


if __name__ == "__main__":
    main()
