"Fixtures shared by the test files: a small trained experiment to serve."
import pytest
from teacher_lora.test_utils import shapes_domain

TINY_SETS = ['preprocess.dino_shortest=128', 'preprocess.dino_longest=192', 'data.workers=0', 'data.val_fraction=.25', 'train.batch_size=2']

@pytest.fixture(scope='module')
def exp(tmp_path_factory)->tuple:
    "A one-epoch experiment of the shipped tiny pretrained teachers on four images (about 20 s): its folder and its image folder."
    from teacher_lora.train import train
    d = tmp_path_factory.mktemp('exp')
    data = shapes_domain(d/'shapes', 4, 'target', seed=0)
    train(data, data.parent/'images', d/'exp', dino='tiny-pretrained', sam='tiny-pretrained', epochs=1, sets=TINY_SETS)
    return d/'exp', data.parent/'images'
