"""The default model and sample images: fetched, verified, found; clear errors otherwise."""
from __future__ import annotations

import pytest

from human_detector_ros import assets
from human_detector_ros.errors import ModelLoadError


@pytest.mark.parametrize('name', assets.DEFAULT_ASSETS)
def test_setup_fetched_every_default_asset_with_its_pinned_hash(name):
    assert assets.is_fetched(name), f'{assets.asset_path(name)} missing or corrupt'


def test_sample_and_model_paths_point_into_the_cache():
    assert assets.default_model_path() == assets.cache_dir() / 'models' / 'best_fp16.onnx'
    assert assets.sample_image_path('camera.png').is_file()
    with pytest.raises(KeyError, match='unknown sample image'):
        assets.sample_image_path('nobody.png')


def test_missing_default_model_says_how_to_fetch_it(tmp_path, monkeypatch):
    monkeypatch.setenv('HUMAN_DETECTOR_ROS_CACHE', str(tmp_path))
    with pytest.raises(ModelLoadError, match='human_detector_fetch_assets'):
        assets.default_model_path()


def test_corrupt_cached_file_is_fetched_again(tmp_path, monkeypatch):
    monkeypatch.setenv('HUMAN_DETECTOR_ROS_CACHE', str(tmp_path))
    target = assets.asset_path('coffee.png')
    target.parent.mkdir(parents=True)
    target.write_bytes(b'not a png')
    assert not assets.is_fetched('coffee.png')
    assert assets.main(['coffee.png']) == 0
    assert assets.is_fetched('coffee.png')
