"""Sign once, verify everywhere: `release sign` off-host over a host-independent statement in
OpenSSH's SSHSIG envelope (checked here by the real ssh-keygen), `release add --signature` on
hosts that hold only the public key, and a byte changed refused at add and at verify."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from agentgw.paths import Layout
from agentgw.plan.release import render_statement
from agentgw.signing import load_private_key, sshsig
from tests.unit.release.support import SHA, Keys, make_keys, write_tree
from tests.unit.runner import agentgw


def host(tmp_path: Path, name: str, keys: Keys) -> Path:
    """A host root that requires signatures and trusts only the public half of ``trusted``."""
    root = tmp_path / name
    etc = root / "etc" / "agentgw"
    (etc / "gateways").mkdir(parents=True)
    pub = root / "trusted.pub"
    shutil.copy(keys.trusted_pub, pub)
    (etc / "agentgw.yaml").write_text(f"require_signature: true\ntrusted_keys:\n  - {pub}\n")
    return root


def sign(tmp_path: Path, tree: Path, key: Path) -> Path:
    sig = tmp_path / "release.sig"
    code, out, err = agentgw("--root", str(tmp_path / "ci"),
                             "release", "sign", str(tree), "--sha", SHA,
                         "--label", "web", "--key", str(key), "--out", str(sig))
    assert code == 0, err
    assert out.startswith("agentgw release statement v1\n")
    return sig


def test_one_signature_is_accepted_by_every_host_with_only_the_public_key(
    tmp_path: Path
) -> None:
    """Signed once; three hosts (each with a different release counter, so their manifests
    differ in version) add and verify it; no private key is on any of them."""
    keys = make_keys(tmp_path / "keys")
    tree = write_tree(tmp_path / "tree")
    sig = sign(tmp_path, tree, keys.trusted)
    for i, name in enumerate(("h1", "h2", "h3")):
        root = host(tmp_path, name, keys)
        for n in range(i):  # other releases first: this one gets another version number
            other = write_tree(tmp_path / f"{name}-other{n}")
            (other / "n").write_text(str(n))
            assert agentgw("--root", str(root),
                           "release", "add", str(other), "--sha", f"{n}{SHA[1:]}",
                       "--label", "x", "--sign-key", str(keys.trusted))[0] == 0
        code, out, err = agentgw("--root", str(root), "release", "add", str(tree), "--sha", SHA,
                             "--label", "web", "--signature", str(sig))
        assert code == 0, err
        assert "signed off-host" in out
        assert agentgw("--root", str(root), "release", "verify", SHA)[0] == 0
        assert not list(root.rglob("trusted")), "a private key on a host"


def test_a_changed_byte_is_refused_at_add_and_at_verify(
    tmp_path: Path
) -> None:
    """One byte changed in the source after signing: add exits 3 and writes nothing; one byte
    changed in an added release: verify exits 3 naming the signature."""
    keys = make_keys(tmp_path / "keys")
    tree = write_tree(tmp_path / "tree")
    sig = sign(tmp_path, tree, keys.trusted)
    root = host(tmp_path, "h1", keys)
    changed = tmp_path / "changed"
    shutil.copytree(tree, changed, symlinks=True)
    main = changed / "agent_cli" / "main.py"
    main.write_text(main.read_text().replace("gateway", "gatewaY"))
    code, _, err = agentgw("--root", str(root), "release", "add", str(changed), "--sha", SHA,
                       "--label", "web", "--signature", str(sig))
    assert code == 3 and "does not match this tree" in err
    assert not list(Layout(root).releases.glob(f"{SHA}-*"))
    assert agentgw("--root", str(root), "release", "add", str(tree), "--sha", SHA, "--label", "web",
               "--signature", str(sig))[0] == 0
    added = Layout(root).releases / f"{SHA}-web"
    manifest = added / "manifest.json"
    text = manifest.read_text().replace('"label": "web"', '"label": "wex"')
    manifest.chmod(0o644)
    manifest.write_text(text)
    manifest.chmod(0o444)
    code, out, err = agentgw("--root", str(root), "release", "verify", SHA)
    assert code == 3
    assert "release.sig" in out + err


def test_an_untrusted_signer_and_a_foreign_namespace_are_refused(
    tmp_path: Path
) -> None:
    """A signature by a key the host does not trust, or made for another purpose (namespace),
    exits 2 before anything is written."""
    keys = make_keys(tmp_path / "keys")
    tree = write_tree(tmp_path / "tree")
    root = host(tmp_path, "h1", keys)
    untrusted = sign(tmp_path, tree, keys.other)
    code, _, err = agentgw("--root", str(root),
                           "release", "add", str(tree), "--sha", SHA, "--label",
                       "web", "--signature", str(untrusted))
    assert code == 2 and "not one of this host's trusted keys" in err
    foreign = tmp_path / "foreign.sig"
    statement = render_statement(SHA, "web", "sha256:" + "0" * 64)
    foreign.write_text(sshsig.sign_message(load_private_key(keys.trusted), statement, "file"))
    code, _, err = agentgw("--root", str(root),
                           "release", "add", str(tree), "--sha", SHA, "--label",
                       "web", "--signature", str(foreign))
    assert code == 2 and "namespace 'file'" in err
    assert not Layout(root).releases.exists() or not list(Layout(root).releases.iterdir())


def test_ssh_keygen_verifies_what_agentgw_signs_and_agentgw_what_ssh_keygen_signs(
    tmp_path: Path
) -> None:
    """The envelope is OpenSSH's: `ssh-keygen -Y verify` accepts agentgw's signature over the
    printed statement, and agentgw reads a signature `ssh-keygen -Y sign` made."""
    keys = make_keys(tmp_path / "keys")
    tree = write_tree(tmp_path / "tree")
    sig = tmp_path / "release.sig"
    code, statement, err = agentgw("--root", str(tmp_path / "ci"),
                                   "release", "sign", str(tree), "--sha",
                               SHA, "--label", "web", "--key", str(keys.trusted), "--out",
                               str(sig))
    assert code == 0
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(err.split("allowed_signers: ", 1)[1])
    done = subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "release", "-n",
         "agentgw-release", "-s", str(sig)],
        input=statement.encode(), capture_output=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    tampered = statement.replace("label web", "label wex").encode()
    assert subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "release", "-n",
         "agentgw-release", "-s", str(sig)], input=tampered, capture_output=True, check=False,
    ).returncode != 0
    # and the other way round: an OpenSSH key signs, agentgw verifies
    ssh_key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_key)],
                   check=True)
    message = tmp_path / "statement"
    message.write_bytes(statement.encode())
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(ssh_key), "-n",
                    "agentgw-release", str(message)], check=True, capture_output=True)
    parsed = sshsig.parse((tmp_path / "statement.sig").read_bytes())
    assert sshsig.verify_message(parsed, statement.encode())
    assert not sshsig.verify_message(parsed, tampered)
