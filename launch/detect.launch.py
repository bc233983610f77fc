"""Start the human_detector node: `ros2 launch human_detector_ros detect.launch.py`.

Arguments: image (input topic), depth_image and camera_info (depth input topics, used with
the `depth` parameter), engine_path (model file; empty = the params file's value),
params_file (default: the installed config/human_detector.yaml; must exist), namespace and
name, cameras (comma-separated camera names: one node for several cameras, each on its own
`<camera>/image`, `<camera>/detections`, ...), use_sim_time, log_level, lifecycle (true: the
managed node, human_detector_lifecycle) and autostart (with lifecycle: configure and activate
at start instead of waiting for a lifecycle manager). Every
other setting is a node parameter: put it in a params file or change it live with
`ros2 param set`.
"""
import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from human_detector_ros.ros.dds_profile import large_image_environment

PACKAGE = 'human_detector_ros'
LOG_LEVELS = ('debug', 'info', 'warn', 'error', 'fatal')


def boolean(text, name):
    value = yaml.safe_load(text)
    if not isinstance(value, bool):
        raise ValueError(f'{name} {text!r}: write true or false.')
    return value


def detector_node(context, *args, **kwargs):
    def argument(name):
        return LaunchConfiguration(name).perform(context)

    params_file = argument('params_file')
    if not os.path.isfile(params_file):
        # launch_ros would only warn and start the node on built-in defaults.
        raise FileNotFoundError(
            f'params_file {params_file!r} does not exist. Give an existing parameters file, '
            'or leave params_file out for the installed config/human_detector.yaml.')
    use_sim_time, lifecycle, autostart = (
        boolean(argument(name), name) for name in ('use_sim_time', 'lifecycle', 'autostart'))
    log_level = argument('log_level')
    if log_level.lower() not in LOG_LEVELS:
        raise ValueError(f'log_level {log_level!r}: use one of {", ".join(LOG_LEVELS)}.')
    parameters = [params_file, {'use_sim_time': use_sim_time}]
    if lifecycle:
        parameters.append({'autostart_node': autostart})
    if argument('engine_path'):
        parameters.append({'engine_path': argument('engine_path')})
    cameras = [name.strip() for name in argument('cameras').split(',') if name.strip()]
    if cameras:
        parameters.append({'cameras': cameras})
    # annotated_image needs a shared-memory segment large enough for camera frames.
    return [Node(
        package=PACKAGE, executable='human_detector_lifecycle' if lifecycle else 'human_detector',
        name=argument('name'),
        namespace=argument('namespace'), output='screen', parameters=parameters,
        remappings=[(topic, argument(topic)) for topic in ('image', 'depth_image', 'camera_info')],
        ros_arguments=['--log-level', log_level],
        additional_env=large_image_environment())]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument('image', default_value='image',
                              description='Input image topic (relative: inside namespace)'),
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
            description='Parameters file of the node; must exist'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='Namespace of the node and its topics, e.g. /robot1'),
        DeclareLaunchArgument('name', default_value='human_detector',
                              description='Node name'),
        DeclareLaunchArgument('cameras', default_value='',
                              description='Comma-separated camera names, e.g. front,rear: one '
                                          'node for all, topics <camera>/image, '
                                          '<camera>/detections, ...; empty = the params file\'s '
                                          'cameras (default: one camera on image)'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='Use the /clock topic as time source'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='Logging level: ' + ', '.join(LOG_LEVELS)),
        DeclareLaunchArgument('lifecycle', default_value='false',
                              description='true: start the managed (lifecycle) node'),
        DeclareLaunchArgument('autostart', default_value='false',
                              description='With lifecycle: configure and activate at start '
                                          '(false: wait for a lifecycle manager)'),
        OpaqueFunction(function=detector_node),
    ])
