"""The demo finds its data: BERTFORGE_DATA, else a download, else one message saying what to set."""

import io
import urllib.request

import pytest

from bertforge.common.errors import CorpusInputError
from bertforge.run import DEMO_FILES, DEMO_TREEBANK, ensure_demo_data


def test_data_dir_with_the_treebank_is_used_as_is(data_dir, tmp_path):
    assert ensure_demo_data(str(data_dir), str(tmp_path)) == str(data_dir)


def test_no_data_and_no_network_says_what_to_set(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(CorpusInputError, match="BERTFORGE_DATA is not set.*export BERTFORGE_DATA"):
        ensure_demo_data("", str(tmp_path))
    assert not (tmp_path / "data" / DEMO_TREEBANK).exists()  # no half-downloaded treebank left as final


def test_download_lands_whole_then_is_reused(data_dir, tmp_path, monkeypatch):
    served = []

    def fake_urlopen(url, timeout):
        name = url.rsplit("/", 1)[1]
        served.append(name)
        return io.BytesIO((data_dir / DEMO_TREEBANK / name).read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    found = ensure_demo_data(str(tmp_path / "nowhere"), str(tmp_path))
    assert sorted(p.name for p in (tmp_path / "data" / DEMO_TREEBANK).iterdir()) == sorted(DEMO_FILES)
    assert ensure_demo_data("", str(tmp_path)) == found and served == list(DEMO_FILES)
