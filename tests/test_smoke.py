"""The smallest end-to-end checks: the ledger opens on both stores and the CLI runs."""

from conftest import keel


def test_genesis_verifies(ledger):
    report = ledger.verify()
    assert report.ok and report.transactions == 1


def test_cli_init_and_verify(home):
    proc = keel("verify", "--json", check=True)
    assert '"ok": true' in proc.stdout
