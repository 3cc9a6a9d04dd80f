"""``plantnotify keygen DIR [--algorithm ES256|RS256] [--force]``: an MQTT token key pair.

Writes ``DIR/mqtt.key`` (PKCS#8 PEM private key, mode 0600: for the api, worker and bridge,
which mint MQTT tokens) and ``DIR/mqtt.pub`` (PEM public key, 0644: for the broker, which only
verifies them), then prints the settings that use them. Never commit the files: ``secrets/`` is
git-ignored and the default. Existing files are kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PRIVATE_NAME = "mqtt.key"
PUBLIC_NAME = "mqtt.pub"
ALGORITHMS = ("ES256", "RS256")
RSA_BITS = 3072


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory",
        metavar="DIR",
        nargs="?",
        default="secrets",
        help="where to write mqtt.key and mqtt.pub (default: secrets, git-ignored)",
    )
    parser.add_argument("--algorithm", choices=ALGORITHMS, default="ES256")
    parser.add_argument("--force", action="store_true", help="replace existing key files")


def generate(algorithm: str) -> tuple[bytes, bytes]:
    """(private PEM, public PEM) of a new key for ``algorithm``."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if algorithm == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    else:
        raise ValueError(f"unsupported algorithm {algorithm!r}; use one of {ALGORITHMS}")
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def write_pair(directory: Path, algorithm: str, *, force: bool = False) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / PRIVATE_NAME, directory / PUBLIC_NAME
    existing = [p for p in (private_path, public_path) if p.exists()]
    if existing and not force:
        raise FileExistsError(
            f"{', '.join(map(str, existing))} already exist; --force replaces them (every "
            "token minted with the old key is then refused)"
        )
    private, public = generate(algorithm)
    _write(private_path, private, 0o600)
    _write(public_path, public, 0o644)
    return private_path, public_path


def run(args: argparse.Namespace) -> int:
    try:
        private, public = write_pair(Path(args.directory), args.algorithm, force=args.force)
    except (FileExistsError, OSError) as exc:
        print(f"plantnotify keygen: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {private} (private, 0600) and {public} (public)")
    print("api, worker, bridge:")
    print(f"  MQTT_JWT_ALGORITHM={args.algorithm} MQTT_JWT_PRIVATE_KEY_FILE={private.resolve()}")
    print("broker:")
    print(f"  MQTT_JWT_ALGORITHM={args.algorithm} MQTT_JWT_PUBLIC_KEY_FILE={public.resolve()}")
    print("docker compose reads secrets/mqtt.key and secrets/mqtt.pub (README); the services")
    print("run as uid 10001: `sudo chown 10001 secrets/mqtt.key` so they can read the key")
    return 0
