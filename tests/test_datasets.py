"""`fruits_nuts()` as a user's machine meets it: a local web server on 127.0.0.1 stands in for GitHub."""
import functools, http.server, shutil, threading
from pathlib import Path
import pytest
from teacher_lora.datasets import DATA_ENV, URL_ENV, FRUITS_NUTS_FILES, DatasetError, FruitsNuts, fruits_nuts, fruits_nuts_help


@pytest.fixture(scope='module')
def original():
    "The original files, from wherever this machine has them (never downloaded by the tests)."
    if not (f := fruits_nuts(download=False)): pytest.skip(fruits_nuts_help())
    return f.root


class Server:
    "Serve `folder` (laid out as the GitHub repository: data/images/*.jpg, data/trainval.json) on 127.0.0.1; count GETs."
    def __init__(self, folder):
        self.gets = []
        gets = self.gets
        class H(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_GET(self): gets.append(self.path); super().do_GET()
        self.srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(H, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
    def close(self): self.srv.shutdown(); self.srv.server_close()


@pytest.fixture
def github(original, tmp_path):
    "A copy of the repository's files, served locally."
    shutil.copytree(original, tmp_path/'github'/'data', ignore=shutil.ignore_patterns('SOURCE.md'))
    s = Server(tmp_path/'github'); yield s; s.close()


@pytest.fixture
def user(tmp_path, monkeypatch):
    "A user's machine: no data folder, an empty cache."
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path/'cache'))
    return tmp_path/'cache'/'teacher_lora'/'fruits_nuts'


def test_download_checks_and_caches(github, user, monkeypatch):
    monkeypatch.setenv(URL_ENV, github.url)
    assert fruits_nuts(download=False) is None and github.gets == []  # download=False never asks the network
    fn = fruits_nuts()
    assert fn == FruitsNuts(user) and len(github.gets) == 19
    assert sorted(github.gets) == sorted(f'/data/{n}' for n in FRUITS_NUTS_FILES)
    assert sorted(p.relative_to(user).as_posix() for p in user.rglob('*') if p.is_file()) == sorted(FRUITS_NUTS_FILES)
    assert fn.annotations.is_file() and len(list(fn.images.glob('*.jpg'))) == 18
    assert fruits_nuts() == fn and fruits_nuts(download=False) == fn and len(github.gets) == 19  # cached: no request
    # a file lost from the cache is fetched again, alone
    (fn.images/'7.jpg').unlink()
    assert fruits_nuts() == fn and github.gets[19:] == ['/data/images/7.jpg']


def test_corrupted_file_refused(github, user, monkeypatch, tmp_path):
    monkeypatch.setenv(URL_ENV, github.url)
    bad = tmp_path/'github'/'data'/'images'/'5.jpg'
    bad.write_bytes(bad.read_bytes()[:-100])  # truncated in transit
    with pytest.raises(DatasetError, match=r'images/5\.jpg: SHA-256 .* refused'):
        fruits_nuts()
    assert not (user/'images'/'5.jpg').exists()
    assert not [p for p in user.rglob('*') if p.is_file() and p.relative_to(user).as_posix() not in FRUITS_NUTS_FILES]  # no partial file
    assert fruits_nuts(download=False) is None  # an incomplete cache is not a dataset


def test_data_folder_first(original, user, monkeypatch, tmp_path):
    "A folder named by $TEACHER_LORA_DATA wins over the cache and the network (the URL points at nothing)."
    monkeypatch.setenv(URL_ENV, 'http://127.0.0.1:9')
    shutil.copytree(original, tmp_path/'data'/'fruits_nuts')
    monkeypatch.setenv(DATA_ENV, str(tmp_path/'data'))
    assert fruits_nuts() == FruitsNuts(tmp_path/'data'/'fruits_nuts')
    (tmp_path/'data'/'fruits_nuts'/'images'/'3.jpg').write_bytes(b'not a jpeg')  # a changed copy is an error, named
    with pytest.raises(DatasetError, match=r'images/3\.jpg: missing or not the original'):
        fruits_nuts(download=False)


def test_offline_says_what_to_do(user, monkeypatch):
    monkeypatch.setenv(URL_ENV, 'http://127.0.0.1:9')  # nothing listens there
    assert fruits_nuts(download=False) is None
    with pytest.raises(DatasetError) as e: fruits_nuts()
    msg = str(e.value)
    assert 'could not download http://127.0.0.1:9/data/' in msg and DATA_ENV in msg and 'fruits_nuts()' in msg
    assert not [p for p in user.rglob('*') if p.is_file()]
