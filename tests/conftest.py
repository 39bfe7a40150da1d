"""Shared fixtures and helpers: tiny models built in-process, the offline reference teacher, the
command line run as a user runs it, and a small compression run."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from clidep import CLIGPT2Config, CLIGPT2LMHeadModel
from clidep.data import shared_data_dir


def tiny_gpt2(seed: int = 0, n_layer: int = 3, n_embd: int = 64, n_head: int = 4, vocab: int = 101) -> GPT2LMHeadModel:
    """A randomly initialised GPT-2 small enough to run in milliseconds."""
    torch.manual_seed(seed)
    config = GPT2Config(
        n_embd=n_embd, n_layer=n_layer, n_head=n_head, vocab_size=vocab, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config).eval()


@pytest.fixture
def gpt2_tiny() -> GPT2LMHeadModel:
    return tiny_gpt2()


@pytest.fixture(scope="session")
def teacher_dir():
    """The reference teacher from ../shared/models (resolved next to the shared data folder)."""
    path = shared_data_dir().parent / "models" / "ref-gpt2-12l"
    assert path.is_dir(), f"reference teacher missing at {path}"
    return path


def llama_cpp_missing() -> str | None:
    """Why llama.cpp cannot be used here (scripts/setup.sh builds it), or None where it is built."""
    from clidep.errors import Unavailable
    from clidep.runtime.llamacpp import bin_dir

    try:
        bin_dir()
    except Unavailable as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def teacher_artifact(teacher_dir, tmp_path_factory):
    """The reference teacher exported once for the session: fp32, int8, int4 and fp16 variants, and, where
    llama.cpp is built, its GGUF files (F32, F16, Q8_0, Q4_0), which only the teacher_gguf tests read: without
    llama.cpp they fail, saying so, and nothing else does."""
    from clidep.commands.export import export_artifact

    out = tmp_path_factory.mktemp("artifacts") / "teacher-onnx"
    gguf = llama_cpp_missing() is None
    return out, export_artifact(teacher_dir, out, int8=True, int4=True, fp16=True, gguf=gguf, ppl_tokens=4096).to_dict()


@pytest.fixture(scope="session")
def teacher_gguf(teacher_artifact):
    """teacher_artifact with its GGUF files; a failure naming what is missing where llama.cpp is not built."""
    missing = llama_cpp_missing()
    if missing:
        pytest.fail(missing, pytrace=False)
    return teacher_artifact


@pytest.fixture(scope="session")
def tiny_setup(tmp_path_factory, teacher_dir):
    """A small GPT-2 teacher (4 blocks, width 64, 128 positions) with the reference tokenizer, and small training
    and validation texts."""
    from clidep.data import load_tokenizer, read_text

    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(
        GPT2Config(vocab_size=8192, n_positions=128, n_embd=64, n_layer=4, n_head=2, bos_token_id=0, eos_token_id=0)
    )
    gpt2.save_pretrained(root / "teacher")
    load_tokenizer(teacher_dir).save_pretrained(root / "teacher")
    text = read_text("wiki-en-valid")[0]
    (root / "train.txt").write_text(text[:300_000])
    # Validation for runs whose figures are not the test's subject (the full 1 MB text, scored once per trial and
    # file, was most of a search's time here).
    (root / "valid.txt").write_text(text[300_000:340_000])
    return root


CLI = [sys.executable, "-m", "clidep"]


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``clidep ARGS`` in a fresh process, output captured."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


SCHEDULES = {  # width schedules of a 4-block, width-64 model: no bottleneck, CLI, uniform, every shape at once
    "identity": [64, 64, 64, 64],
    "cli": [64, 32, 32, 64],
    "uniform": [48, 48, 48, 48],
    "ragged": [16, 64, 32, 48],
}


def tiny_config(widths: list[int], **kw) -> CLIGPT2Config:
    """A CLIGPT2 config of width 64 with blocks of WIDTHS, vocabulary 101."""
    return CLIGPT2Config(
        vocab_size=101,
        n_positions=64,
        n_embd=64,
        n_layer=len(widths),
        n_head=4,
        head_dim=16,
        layer_widths=widths,
        bos_token_id=0,
        eos_token_id=0,
        **kw,
    )


def tiny_compress(root, out, **kw):
    """``compress`` on the tiny_setup teacher: CLI at width 32 protecting blocks 0 and 3, unless KW says otherwise."""
    from clidep.commands.compress import compress

    args = dict(
        method="cli",
        width=32,
        protect="0,3",
        data=str(root / "train.txt"),
        val_data=str(root / "valid.txt"),
        batch_size=8,
        seq_len=64,
        eval_every=0,
        log=lambda m: None,
    )
    return compress(str(root / "teacher"), out, **{**args, **kw})


@pytest.fixture(scope="module")
def ragged(tmp_path_factory):
    """A CLIGPT2 model of the ragged schedule and its ONNX graph, exported once per module."""
    from clidep.export.traced_graph import export_onnx

    torch.manual_seed(0)
    model = CLIGPT2LMHeadModel(tiny_config(SCHEDULES["ragged"])).eval()
    path = export_onnx(model, tmp_path_factory.mktemp("ragged") / "model.onnx")
    return model, path


def python_without_clidep(tmp_path) -> str:
    """A Python that sees this environment's packages (torch, transformers) but cannot import clidep.

    A separate virtual environment whose path file adds this one's site-packages; Python reads it
    without running the path files of the folder it adds, and clidep's editable install is one of
    those. Callers assert ``find_spec('clidep') is None`` in what they run."""
    import sysconfig

    env = tmp_path / "env-without-clidep"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    site = next((env / "lib").glob("python3*/site-packages"))
    (site / "peers.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return str(env / "bin" / "python")


class ClosedPipe:
    """A standard output whose reader has quit (`clidep ... | head`, `| true`)."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        pass

    def isatty(self):
        return False


ROOT = Path(__file__).resolve().parents[1]
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def device(tmp_path_factory):
    """(ssh_config file, host alias, the device environment) of a loopback sshd."""
    if not Path(SSHD).is_file():
        pytest.fail(
            "sshd is not installed: scripts/setup.sh installs Debian's openssh-server where apt can", pytrace=False
        )
    root = tmp_path_factory.mktemp("device")
    env = root / "env"  # the device: python with numpy and onnxruntime, pinned as the lock pins them
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    subprocess.run(
        [
            str(env / "bin" / "pip"),
            "install",
            "-q",
            "-c",
            str(ROOT / "requirements" / "clidep.lock.txt"),
            "numpy",
            "onnxruntime",
        ],
        check=True,
        capture_output=True,
    )
    for key in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / key)], check=True)
    (root / "authorized_keys").write_text((root / "client.pub").read_text())
    port = free_port()
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host'}\nAuthorizedKeysFile {root / 'authorized_keys'}\n"
        f"PidFile {root / 'sshd.pid'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nSubsystem sftp internal-sftp\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")], stderr=subprocess.PIPE, text=True)
    config = root / "ssh_config"
    config.write_text(
        f"Host clidep-device\n  HostName 127.0.0.1\n  Port {port}\n  User {getpass.getuser()}\n"
        f"  IdentityFile {root / 'client'}\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
        "  LogLevel ERROR\n"
    )
    for _ in range(50):  # until it listens
        if (
            subprocess.run(
                ["ssh", "-F", str(config), "-o", "BatchMode=yes", "clidep-device", "true"], capture_output=True
            ).returncode
            == 0
        ):
            break
        time.sleep(0.2)
    yield str(config), "clidep-device", env
    server.terminate()
    server.wait(timeout=10)
