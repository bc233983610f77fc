"""Start the human_detector node: `ros2 launch human_detector_ros detect.launch.py`.

Arguments: image (input topic), depth_image and camera_info (depth input topics, used with
the `depth` parameter), engine_path (model file; empty = the params file's value),
params_file (default: the installed config/human_detector.yaml). Every other setting is a
node parameter: put it in a params file or change it live with `ros2 param set`.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from human_detector_ros.ros.dds_profile import large_image_environment

PACKAGE = 'human_detector_ros'


def detector_node(context, *args, **kwargs):
    parameters = [LaunchConfiguration('params_file').perform(context)]
    engine_path = LaunchConfiguration('engine_path').perform(context)
    if engine_path:
        parameters.append({'engine_path': engine_path})
    # annotated_image needs a shared-memory segment large enough for camera frames.
    return [Node(
        package=PACKAGE, executable='human_detector', name='human_detector', output='screen',
        parameters=parameters,
        remappings=[(topic, LaunchConfiguration(topic))
                    for topic in ('image', 'depth_image', 'camera_info')],
        additional_env=large_image_environment())]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument('image', default_value='image',
                              description='Input image topic'),
        DeclareLaunchArgument('depth_image', default_value='depth_image',
                              description='Depth image aligned to the colour image '
                                          '(with the depth parameter)'),
        DeclareLaunchArgument('camera_info', default_value='camera_info',
                              description="The colour camera's CameraInfo "
                                          '(with the depth parameter)'),
        DeclareLaunchArgument('engine_path', default_value='',
                              description='Model file; empty = the one in params_file'),
        DeclareLaunchArgument(
            'params_file', default_value=os.path.join(share, 'config', 'human_detector.yaml'),
            description='Parameters file of the node'),
        OpaqueFunction(function=detector_node),
    ])
