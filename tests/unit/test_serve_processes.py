"""Real server processes (``siamkit serve`` via the CLI): enrolments survive a kill -9 in the
middle of enrolling, and two servers on one gallery folder see each other's writes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from siamkit.gallery import Gallery
from unit.test_serve import RW, png, tiny_model

LAUNCH = "import sys, siamkit.cli.serve; from siamkit.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("processes") / "model")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """``siamkit serve MODEL --gallery G`` in a subprocess, with an httpx client."""

    def __init__(self, model: Path, gallery: Path, log: Path) -> None:
        self.port = free_port()
        env = {**os.environ, "SIAMKIT_API_KEYS": RW, "SIAMKIT_TORCH_THREADS": "1"}
        args = [sys.executable, "-c", LAUNCH, "serve", str(model), "--gallery", str(gallery),
                "--port", str(self.port)]  # fmt: skip
        self.log = log.open("wb")
        self.process = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {RW}"}, timeout=60
        )
        self.log_path = log

    def wait_ready(self) -> Served:
        log = self.log_path
        for _ in range(1200):
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {log.read_text()[-2000:]}")
            try:
                if self.client.get("/ready").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server never ready: {log.read_text()[-2000:]}")

    def enroll(self, name: str, seeds: list[int]) -> httpx.Response:
        files = [("files", (f"{name}-{s}.png", png(s))) for s in seeds]
        return self.client.post("/v1/enroll", data={"name": name}, files=files)

    def people(self) -> dict[str, int]:
        return {p["name"]: p["templates"] for p in self.client.get("/v1/people").json()["people"]}

    def identify(self, seed: int) -> str | None:
        answer = self.client.post("/v1/identify", files={"file": ("p.png", png(seed))})
        assert answer.status_code == 200, answer.text
        return answer.json()["identity"]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(60)
        self.log.close()


def test_enrolments_survive_kill_9_during_enrolment(model_dir, tmp_path):
    gallery = tmp_path / "faces.gallery"
    server = Served(model_dir, gallery, tmp_path / "first.log").wait_ready()
    confirmed: dict[str, int] = {}
    try:
        for i in range(3):
            assert server.enroll(f"early{i}", [10 * i, 10 * i + 1]).status_code == 200
            confirmed[f"early{i}"] = 2
        stop = threading.Event()

        def keep_enrolling(worker: int) -> None:  # each request: 8 templates in one transaction
            i = 0
            while not stop.is_set():
                name = f"w{worker}-{i}"
                try:
                    answer = server.enroll(name, list(range(1000 + i * 8, 1008 + i * 8)))
                except httpx.TransportError:
                    return  # the server was killed under this request
                if answer.status_code == 200:
                    confirmed[name] = 8
                i += 1

        threads = [threading.Thread(target=keep_enrolling, args=(w,)) for w in range(3)]
        for thread in threads:
            thread.start()
        while len(confirmed) < 8:  # some enrolments done, three more in flight
            time.sleep(0.01)
        server.process.kill()  # SIGKILL: no shutdown, no index saved
        server.process.wait(30)
        stop.set()
        for thread in threads:
            thread.join(60)
    finally:
        server.stop()
    with Gallery.open(gallery) as opened:  # the folder opens consistent
        stored = opened.identities()
    for name, templates in stored.items():  # all of an enrolment or none of it
        assert templates == (2 if name.startswith("early") else 8), name
    assert confirmed.items() <= stored.items()
    again = Served(model_dir, gallery, tmp_path / "second.log").wait_ready()
    try:
        assert again.people() == stored
        assert again.identify(21) == "early2"
        assert again.enroll("after", [5000]).status_code == 200
    finally:
        again.stop()


def test_two_servers_on_one_gallery_see_each_others_writes(model_dir, tmp_path):
    gallery = tmp_path / "shared.gallery"
    first = Served(model_dir, gallery, tmp_path / "a.log")
    second = Served(model_dir, gallery, tmp_path / "b.log")
    try:
        first.wait_ready(), second.wait_ready()  # both started at once
        failures: list[str] = []

        def enroll_and_identify(server: Served, prefix: str, other: str) -> None:
            for i in range(6):
                answer = server.enroll(f"{prefix}{i}", [100 * i + ord(prefix)])
                if answer.status_code != 200:
                    failures.append(answer.text)
                server.identify(100 * i + ord(other))  # reads while the other one writes

        threads = [
            threading.Thread(target=enroll_and_identify, args=(first, "a", "b")),
            threading.Thread(target=enroll_and_identify, args=(second, "b", "a")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not failures
        everyone = {f"{p}{i}": 1 for p in "ab" for i in range(6)}
        assert first.people() == everyone and second.people() == everyone
        for i in range(6):  # each finds the faces the other one enrolled
            assert first.identify(100 * i + ord("b")) == f"b{i}"
            assert second.identify(100 * i + ord("a")) == f"a{i}"
        assert first.client.delete("/v1/people/b0").status_code == 200
        assert "b0" not in second.people()
        assert second.identify(ord("b")) != "b0"
        assert second.client.delete("/v1/people/b0").status_code == 404
    finally:
        first.stop()
        second.stop()
    with Gallery.open(gallery) as opened:
        assert len(opened.identities()) == 11


def test_sigterm_lets_a_request_in_flight_finish(model_dir, tmp_path):
    server = Served(model_dir, tmp_path / "g.gallery", tmp_path / "term.log").wait_ready()
    request = httpx.Request("POST", "/v1/verify", files={"a": ("a.png", png(1)),
                                                         "b": ("b.png", png(2))})  # fmt: skip
    body = request.read()
    half = len(body) // 2
    sent_half = threading.Event()

    def slow_body():  # the request is in flight (half its body sent) when SIGTERM arrives
        yield body[:half]
        sent_half.set()
        time.sleep(1.5)
        yield body[half:]

    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(server.client.post(
        "/v1/verify", content=slow_body(),
        headers={"Content-Type": request.headers["Content-Type"]})))  # fmt: skip
    try:
        thread.start()
        assert sent_half.wait(60)
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        thread.join(60)
        assert server.process.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM
    finally:
        server.stop()
    assert answers and answers[0].status_code == 200, answers
    assert answers[0].json()["decision"] in ("same", "different")
    log = server.log_path.read_text()
    assert "Shutting down" in log and "Application shutdown complete" in log
