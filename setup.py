from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'human_detector_ros'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=[PACKAGE, PACKAGE + '.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', glob('config/*.yaml') + glob('config/*.xml')),
    ],
    install_requires=['setuptools'],
    zip_safe=False,
    maintainer='human_detector_ros maintainers',
    maintainer_email='maintainers@human-detector-ros.invalid',
    description='Person detection for ROS 2 with TensorRT, ONNX Runtime or TorchScript.',
    license='Apache-2.0',
    python_requires='>=3.8',
    entry_points={
        'console_scripts': [
            'human_detector = human_detector_ros.ros.entry:human_detector',
            'human_detector_lifecycle = human_detector_ros.ros.entry:human_detector_lifecycle',
            'human_detector_cli = human_detector_ros.cli:main',
            'human_detector_fetch_assets = human_detector_ros.assets:main',
            'sample_camera = human_detector_ros.ros.entry:sample_camera',
        ],
    },
)
