"""load_base_model with a hub model id: the local cache first; offline and not cached, one clear line
and the bundled model, never a hang. Bundled names behave as before. (The tests never touch the network:
loading runs in a subprocess whose HF_HOME is an empty or hand-made cache.)"""
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from peftlab.workbook import load_base_model
from peftlab.workbook.zoo import http_status, hub_unavailable, model_path

LOAD = ("from peftlab.workbook import load_base_model\n"
        "model, tokenizer = load_base_model({name!r})\n"
        "print(type(model).__name__, model.num_parameters(), model.name_or_path.endswith('pico-llama-1m'))")


def load_in_subprocess(name: str, hf_home, **env) -> tuple[list[str], float]:
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", LOAD.format(name=name)], capture_output=True, text=True,
                            timeout=180, env=os.environ | {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"} | env)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.splitlines(), time.monotonic() - start


def test_offline_a_hub_id_that_is_not_cached_falls_back_to_the_bundled_model_in_one_line(tmp_path):
    lines, _ = load_in_subprocess("gpt2", tmp_path / "empty-cache")
    assert lines == ["Hub model 'gpt2' is not in the local cache and HF_HUB_OFFLINE is set: "
                     "using the bundled 'pico-llama-1m' instead.",
                     "LlamaForCausalLM 1045760 True"]


@pytest.fixture
def silent_endpoint():
    """An address that accepts connections and never answers: worse than no network for a client."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_without_hf_hub_offline_a_silent_hub_is_given_up_on_within_seconds(tmp_path, silent_endpoint):
    lines, seconds = load_in_subprocess("gpt2", tmp_path / "empty-cache", HF_HUB_OFFLINE="0",
                                        HF_ENDPOINT=silent_endpoint)
    assert lines[0] == (f"Hub model 'gpt2' is not in the local cache and {silent_endpoint} did not answer "
                        "within 2 s (offline?): using the bundled 'pico-llama-1m' instead.")
    assert lines[1].endswith("True") and seconds < 120


def test_a_hub_model_in_the_local_cache_loads_without_the_network(tmp_path):
    # The hub cache's layout: models--{org}--{name}/refs/main names a snapshot folder holding the files.
    repo = tmp_path / "hf" / "hub" / "models--someone--pico"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    shutil.copytree(model_path("pico-gpt2-1m"), repo / "snapshots" / revision)
    lines, _ = load_in_subprocess("someone/pico", tmp_path / "hf")
    assert len(lines) == 1 and lines[0].startswith("GPT2LMHeadModel") and lines[0].endswith("False")


@pytest.fixture
def hub_with_one_model():
    """A local stand-in for the hub's API: 200 for models/someone/pico, 404 for anything else."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/api/models/someone/pico" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_hub_check_reads_the_answer_and_never_waits_past_its_timeout(monkeypatch, hub_with_one_model,
                                                                          silent_endpoint):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub_with_one_model)
    assert hub_unavailable("someone/pico") is None
    assert "answered HTTP 404" in hub_unavailable("someone/typo")

    def gives_up(url):
        start = time.monotonic()
        return http_status(url, timeout=0.5) is None and time.monotonic() - start < 3

    assert gives_up(f"{silent_endpoint}/api/models/gpt2")
    def hanging_resolver(*args, **kwargs):
        time.sleep(30)
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(socket, "create_connection", hanging_resolver)
    assert gives_up("https://huggingface.co/api/models/gpt2")


def test_hf_hub_offline_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_unavailable("gpt2") == "HF_HUB_OFFLINE is set"


def test_bundled_names_load_as_before_and_a_misspelt_one_is_still_an_error(capsys):
    model, tokenizer = load_base_model("pico-llama-1m")
    assert capsys.readouterr().out == ""
    assert model.name_or_path == str(model_path("pico-llama-1m")) and tokenizer.pad_token_id is not None
    with pytest.raises(FileNotFoundError, match="Available: .*pico-llama-1m"):
        load_base_model("pico-llama-2m")
