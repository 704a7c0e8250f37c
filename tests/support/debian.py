"""Debian packages the suite needs, installed with apt-get only when their command is missing (CI
runs as root on a clean clone; nothing is downloaded when the machine already has them)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def debian_command_ensure(command: str, package: str) -> str:
    """The path of `command`, installing Debian's `package` first when it is not on PATH."""
    found = shutil.which(command)
    if found:
        return found
    apt = ["apt-get", "install", "-y", "--no-install-recommends", package]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(apt, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(apt, env=env, check=True)
    found = shutil.which(command)
    if not found:
        pytest.fail(f"{command} is not installed and `apt-get install -y {package}` did not provide it")
    return found
