"""Settings, config files and output paths the console scripts refuse before any work: exit 2 and a message naming the key or path
and the fix. In-process calls (each verb returns its exit code) where the function is what is tested; subprocesses only for locks."""
import contextlib, io, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
from teacher_lora.config import ConfigError, defaults, generate_config
from teacher_lora.coco import inspect_dataset
from teacher_lora.cli import train_cli, evaluate_cli, label_cli, validate_cli
from teacher_lora.test_utils import tiny_coco, shapes_dataset

INFO = inspect_dataset(tiny_coco())


def cli(f, **kw):
    "Call a verb in-process: (exit code, stderr)."
    with contextlib.redirect_stderr(io.StringIO()) as e, contextlib.redirect_stdout(io.StringIO()): rc = f(**kw)
    return rc, e.getvalue()


def refused(rc, err, *parts):
    assert rc == 2, f"exit {rc}: {err}"
    assert 'internal error' not in err and 'Traceback' not in err, err
    for p in parts: assert p in err, (p, err)


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp('cfgcli')
    ann = shapes_dataset(root/'d', 2, seed=1, background='plain', scale=(.3, .55))
    return ann, root/'d'/'images'


# item 10: every key has a documented range, checked when the config is built
def test_every_key_has_a_spec():
    from teacher_lora.config import specs
    keys = {f"{s}.{k}" for s, v in defaults().items() for k in v}
    assert set(specs()) == keys, keys ^ set(specs())


@pytest.mark.parametrize('s,key', [('data.val_fraction=0', 'data.val_fraction'), ('train.batch_size=-1', 'train.batch_size'),
                                   ('train.epochs=-3', 'train.epochs'), ('train.batch_size=0', 'train.batch_size'), ('train.lr=.nan', 'train.lr'),
                                   ('sam.lora_r=0', 'sam.lora_r'), ('data.workers=-1', 'data.workers'), ('sam.checkpoint=[1,2]', 'sam.checkpoint'),
                                   ('train.lr=null', 'train.lr'), ('train.cache=sometimes', 'train.cache'), ('train.cache_memory=lots', 'train.cache_memory')])
def test_out_of_range_refused(s, key):
    with pytest.raises(ConfigError, match=key.replace('.', r'\.')): generate_config(INFO, sets=[s])


def test_out_of_range_in_config_file_refused(tmp_path):
    (tmp_path/'c.yaml').write_text('train:\n  batch_size: 0\n')
    with pytest.raises(ConfigError, match=r'train\.batch_size: 0 .*int >= 1'): generate_config(INFO, tmp_path/'c.yaml')


def test_out_of_range_through_the_cli_writes_nothing(shapes, tmp_path):
    ann, images = shapes
    rc, err = cli(train_cli, data=str(ann), images=str(images), output=str(tmp_path/'exp'), set=['train.epochs=-3'])
    refused(rc, err, 'train.epochs', 'int >= 1')
    assert not (tmp_path/'exp').exists()


@pytest.mark.parametrize('s,key,fix', [('sam.lora_scope=encoder:3', 'sam.lora_scope', 'encoder:1 to encoder:2'),
                                       ('dino.lora_scope=encoder:2', 'dino.lora_scope', 'encoder:1 to encoder:1'),
                                       ('sam.lora_scope=encoder:0', 'sam.lora_scope', 'encoder:all')])
def test_lora_scope_past_the_encoder_writes_nothing(shapes, tmp_path, s, key, fix):
    "Issue 16: a K larger than the teacher's encoder (tiny: SAM 2 blocks, Grounding DINO 1 layer) is refused before any work."
    ann, images = shapes
    rc, err = cli(train_cli, data=str(ann), images=str(images), output=str(tmp_path/'exp'), dino='tiny', sam='tiny', set=[s])
    refused(rc, err, key, fix)
    assert not (tmp_path/'exp').exists()


# item 20: --set train.mixed_precision=no (YAML reads no as False)
def test_mixed_precision_no():
    assert generate_config(INFO, sets=['train.mixed_precision=no']).train.mixed_precision == 'no'
    assert generate_config(INFO, sets=['train.cache=off']).train.cache == 'off'
    with pytest.raises(ConfigError, match='train.mixed_precision'): generate_config(INFO, sets=['train.mixed_precision=yes'])


# item 13: aliases refused, file size bounded, rejected values quoted short
def test_yaml_alias_bomb_refused(tmp_path):
    lines = ['a0: &a0 ["xxxxxxxxxx","xxxxxxxxxx","xxxxxxxxxx","xxxxxxxxxx","xxxxxxxxxx","xxxxxxxxxx","xxxxxxxxxx","xxxxxxxxxx","xxxxxxxxxx"]']
    lines += [f'a{i}: &a{i} [' + ','.join([f'*a{i-1}'] * 9) + ']' for i in range(1, 9)]
    p = tmp_path/'bomb.yaml'; p.write_text('\n'.join(lines) + '\ntrain: {lr: *a8}\n')  # 9**9 strings once expanded
    with pytest.raises(ConfigError, match='alias') as e: generate_config(INFO, p)
    assert 'bomb.yaml' in str(e.value) and len(str(e.value)) < 500
    with pytest.raises(ConfigError, match='alias'): generate_config(INFO, sets=['train.lr=*a'])


def test_large_values_quoted_short(tmp_path):
    p = tmp_path/'big.yaml'; p.write_text('train:\n  lr: [' + ','.join(['"' + 'x' * 100 + '"'] * 200) + ']\n')
    with pytest.raises(ConfigError, match='train.lr') as e: generate_config(INFO, p)
    assert len(str(e.value)) < 500
    p.write_text('# padding\n' * 200_000)
    with pytest.raises(ConfigError, match='bytes'): generate_config(INFO, p)
    with pytest.raises(ConfigError, match='train.lr') as e: generate_config(INFO, sets=['train.lr=' + '[' * 5000])
    assert len(str(e.value)) < 500


# item 24: malformed --set values and config files that are not a mapping: exit 2
@pytest.mark.parametrize('sets,part', [(['train.lr=!!python/object/apply:os.system [ls]'], 'train.lr'), (['train.lr=['], 'train.lr'),
                                       (['train=5', 'train.lr=1'], 'train'), (['train.lr=1', 'train=5'], 'train')])
def test_malformed_set_refused(sets, part):
    with pytest.raises(ConfigError, match=part): generate_config(INFO, sets=sets)


@pytest.mark.parametrize('text', ['[1, 2]\n', 'hello\n', b'\xff\xfe\x00', '!!python/object/apply:os.system [ls]\n', 'train: [\n'])
def test_config_file_not_a_mapping_refused(tmp_path, text):
    p = tmp_path/'c.yaml'
    (p.write_bytes if isinstance(text, bytes) else p.write_text)(text)
    with pytest.raises(ConfigError, match='c.yaml'): generate_config(INFO, p)


def test_malformed_set_through_the_cli(shapes, tmp_path):
    ann, images = shapes
    rc, err = cli(train_cli, data=str(ann), images=str(images), output=str(tmp_path/'exp'), set=['train=5', 'train.lr=1'])
    refused(rc, err, 'train')
    (tmp_path/'c.yaml').write_text('[1, 2]\n')
    rc, err = cli(train_cli, data=str(ann), images=str(images), output=str(tmp_path/'exp'), config=str(tmp_path/'c.yaml'))
    refused(rc, err, 'c.yaml', 'mapping')


# item 25: output paths checked before the work
def test_output_paths_checked_first(shapes, tmp_path):
    ann, images = shapes
    f = tmp_path/'afile'; f.write_text('x'); d = tmp_path/'adir'; d.mkdir()
    refused(*cli(train_cli, data=str(ann), images=str(images), output=str(f)), '--output', 'is a file')
    refused(*cli(train_cli, data=str(ann), images=str(images), output=str(f/'x')), '--output', 'is a file')
    refused(*cli(validate_cli, data=str(ann), split='train:.5,val:.5', out=str(f/'sp')), '--out', 'is a file')
    refused(*cli(validate_cli, data=str(ann), split='train:.5,val:.5', out=str(f)), '--out', 'is a file')
    refused(*cli(validate_cli, data=str(ann), split='train:.5,val:.5', out='/proc/teacher_lora_sp'), '--out', 'cannot')
    refused(*cli(validate_cli, data=str(ann), fix=str(d)), '--fix', 'is a folder')
    refused(*cli(label_cli, exp=str(tmp_path), images=str(images), out=str(d)), '--out', 'is a folder')
    refused(*cli(label_cli, exp=str(tmp_path), images=str(images), out=str(f/'l.json')), '--out', 'is a file')
    refused(*cli(label_cli, exp=str(tmp_path), images=str(tmp_path/'imagez'), out=str(tmp_path/'l.json')), '--images', 'imagez')
    t = time.time()
    refused(*cli(evaluate_cli, exp=str(tmp_path), data=str(ann), images=str(images), out=str(f)), '--out', 'is a file')
    assert time.time() - t < 5
    assert f.read_text() == 'x' and not (tmp_path/'l.json').exists()


# item 26: one writer per output
from teacher_lora import cli as _cli
LOCK = getattr(_cli, 'LOCK', '.teacher-lora.lock')
HOLD = "import sys, time; from teacher_lora.cli import output_lock\nwith output_lock(sys.argv[1], '--output'): print('held', flush=True); time.sleep(60)"


@contextlib.contextmanager
def held_elsewhere(path):
    "A lock on `path` held by another process; yields it."
    p = subprocess.Popen([sys.executable, '-c', HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == 'held'
        yield p
    finally: p.kill(); p.wait()


def test_second_writer_refused(shapes, tmp_path):
    from teacher_lora.cli import output_lock
    ann, images = shapes
    exp = tmp_path/'exp'; exp.mkdir(); (exp/'config.yaml').write_text('train: {}\n'); (exp/'sam').mkdir()
    with held_elsewhere(exp/LOCK):
        rc, err = cli(train_cli, data=str(ann), images=str(images), output=str(exp), set=['sam.model=tiny'], overwrite=True)
        refused(rc, err, str(exp), 'another teacher-lora run')
        assert (exp/'sam').exists() and (exp/'config.yaml').exists()  # --overwrite deleted nothing
        os.environ['RANK'] = '1'  # another process of the same torchrun job: does not take the lock, so is not refused
        try:
            with output_lock(exp/LOCK, '--output'): pass
        finally: del os.environ['RANK']


def test_label_second_writer_refused(shapes, tmp_path):
    ann, images = shapes
    out = tmp_path/'labels.json'
    with held_elsewhere(Path(f"{out}.lock")):
        refused(*cli(label_cli, exp=str(tmp_path), images=str(images), out=str(out)), str(out), 'another teacher-lora run')


def test_lock_of_a_killed_run_is_free(tmp_path):
    from teacher_lora.cli import output_lock
    lock = tmp_path/'exp'/LOCK
    with held_elsewhere(lock) as p: p.send_signal(signal.SIGKILL); p.wait()
    from teacher_lora.train import prepare_output
    test_cfg = generate_config(INFO)
    assert lock.exists() and prepare_output(lock.parent, test_cfg) == lock.parent  # the killed run's lock file is not content
    with output_lock(lock, '--output'): assert lock.exists()
    assert not lock.exists()


def test_damaged_weights_refused_before_anything_is_written(shapes, tmp_path):
    "Issue 15 #23/#27: a damaged SAM checkpoint or Grounding DINO weight file: exit 2 naming the file, and no experiment left behind (a rerun is not refused)."
    from teacher_lora.teachers import tiny_dino
    ann, images = shapes
    (tmp_path/'junk.pth').write_bytes(b'garbage')
    tiny_dino().save_pretrained(tmp_path/'dino'); (tmp_path/'dino'/'model.safetensors').write_bytes(b'\x00' * 10)
    for kw, part in ((dict(sam=f"tiny:{tmp_path/'junk.pth'}", set=['dino.model=tiny']), 'junk.pth (SAM checkpoint): refused'),
                     (dict(dino=str(tmp_path/'dino'), sam='tiny'), 'model.safetensors (Grounding DINO): not a readable safetensors file')):
        rc, err = cli(train_cli, data=str(ann), images=str(images), output=str(tmp_path/'exp'), **kw)
        refused(rc, err, part)
        assert not (tmp_path/'exp').exists()
