"""worker.memory: the glibc malloc settings a worker makes at start (pure logic around mallopt;
run in a child process so this one's allocator is left as it was)."""

import json
import os
import subprocess
import sys

import pytest

CHILD = "import json, worker.memory as m; print(json.dumps(m.configure_malloc()))"


def configure_in_child(**env: str) -> dict[str, bool]:
    clean = {key: value for key, value in os.environ.items()
             if key not in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")}
    out = subprocess.run([sys.executable, "-c", CHILD], env={**clean, **env}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


glibc = pytest.mark.skipif(not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc only")


@glibc
def test_both_settings_are_made_on_glibc():
    assert configure_in_child() == {"arena_max": True, "mmap_threshold": True}


@glibc
def test_the_environment_wins_over_each_setting():
    assert configure_in_child(MALLOC_ARENA_MAX="16") == {"arena_max": False, "mmap_threshold": True}
    assert configure_in_child(MALLOC_MMAP_THRESHOLD_="33554432") == {"arena_max": True, "mmap_threshold": False}
