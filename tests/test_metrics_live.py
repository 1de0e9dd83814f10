"""Every pixq_ metric the Grafana dashboards and alerts query is exported by a running API or worker."""

import urllib.request

import pytest

from tests.deploy.grafana_metrics import dashboard_metric_names
from tests.helpers import make_image
from tests.stack import Stack, stack_env


def scrape_names(url: str) -> set[str]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


@pytest.fixture
def stack(nats, redis_proc, tmp_path):
    stack = Stack(stack_env(nats.port, redis_proc.port, tmp_path), tmp_path)
    stack.start_api()
    stack.start_worker()
    yield stack
    stack.stop()


def test_dashboard_metrics_are_exported(stack, tmp_path):
    import subprocess

    from tests.stack import BIN
    image = tmp_path / "in.jpg"
    image.write_bytes(make_image(200, 200))
    done = subprocess.run([str(BIN / "pixq"), "--api-url", stack.api_url, "submit", "resize", str(image),
                           "--width", "50", "--wait"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    exported = scrape_names(stack.api_url) | scrape_names(stack.workers[0].metrics_url)
    wanted = dashboard_metric_names()["pixq"]
    assert wanted, "dashboards query no pixq metric"
    missing = sorted(name for name in wanted if name not in exported)
    assert not missing, f"dashboards/alerts query metrics nobody exports: {missing}"
