"""A recording stand-in for the part of the launch / launch_ros API that
launch/detect.launch.py uses; the real packages cannot be installed without a ROS distro.

`launch_processes(arguments)` runs the launch file as `ros2 launch human_detector_ros
detect.launch.py name:=value ...` would: declared defaults filled in, OpaqueFunctions called
with a context holding the launch configurations, and each launch_ros Node turned into the
command line and environment that launch_ros 0.28 gives the process (`Node.__init__` and
`Node._perform_substitutions`: `--ros-args` blocks, `__node`/`__ns` remaps, a dict of
parameters written to a params file keyed by the full node name, a missing params file
skipped with a warning, remaps). The real node is then started with exactly that.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import yaml

from human_detector_ros.ros.paths import installed_executable

LAUNCH_FILE = Path(__file__).resolve().parent.parent / 'launch' / 'detect.launch.py'


class LaunchContext:
    def __init__(self, configurations: Dict[str, str]) -> None:
        self.launch_configurations = dict(configurations)


class LaunchConfiguration:
    def __init__(self, name: str) -> None:
        self.name = name

    def perform(self, context: LaunchContext) -> str:
        return context.launch_configurations[self.name]


class DeclareLaunchArgument:
    def __init__(self, name: str, default_value: Optional[str] = None,
                 description: str = '') -> None:
        self.name, self.default_value, self.description = name, default_value, description


class OpaqueFunction:
    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function


class LaunchDescription:
    def __init__(self, entities: Sequence[Any]) -> None:
        self.entities = list(entities)


class Node:
    """Records what the launch file gives launch_ros.actions.Node."""

    def __init__(self, *, package: str, executable: str, name: Optional[str] = None,
                 namespace: Optional[str] = None, parameters: Optional[List[Any]] = None,
                 remappings: Optional[List[Any]] = None,
                 ros_arguments: Optional[List[str]] = None,
                 arguments: Optional[List[str]] = None,
                 additional_env: Optional[Dict[str, str]] = None, output: str = 'log') -> None:
        self.package, self.executable, self.name = package, executable, name
        self.namespace, self.parameters = namespace, parameters or []
        self.remappings, self.ros_arguments = remappings or [], ros_arguments
        self.arguments, self.additional_env = arguments or [], additional_env or {}


@dataclass
class Process:
    """A process launch would start: command line, added environment, launch's warnings."""

    command: List[str]
    env: Dict[str, str]
    warnings: List[str] = field(default_factory=list)


def _full_namespace(namespace: Optional[str]) -> Optional[str]:
    # launch_ros: make_namespace_absolute(prefix_namespace(None, namespace)), no base namespace.
    if namespace is None:
        return None
    if namespace != '/':
        namespace = namespace.rstrip('/')
    return namespace if namespace.startswith('/') else '/' + namespace


def _parameter_value(value: Any) -> Any:
    # launch_ros evaluates a string value of a parameters dict as YAML.
    return (yaml.safe_load(value) if value else '') if isinstance(value, str) else value


def _process(node: Node, params_dir: Path) -> Process:
    command = [installed_executable(node.executable), *node.arguments]
    if node.ros_arguments is not None:
        command += ['--ros-args', *node.ros_arguments]
    command += ['--ros-args']
    if node.name is not None:
        command += ['-r', f'__node:={node.name}']
    namespace = _full_namespace(node.namespace)
    if namespace is not None:
        command += ['-r', f'__ns:={namespace}']
    full_name = (namespace.rstrip('/') if namespace else '') + '/' + node.name \
        if node.name is not None else None
    warnings = []
    for parameters in node.parameters:
        if isinstance(parameters, dict):
            handle, path = tempfile.mkstemp(prefix='launch_params_', dir=params_dir)
            with os.fdopen(handle, 'w') as file:
                yaml.dump({full_name or '/**': {'ros__parameters': {
                    key: _parameter_value(value) for key, value in parameters.items()}}},
                    file, default_flow_style=False)
        else:
            path = os.path.abspath(str(parameters))
            if not os.path.isfile(path):
                warnings.append(f'Parameter file path is not a file: {path}')
                continue
        command += ['--params-file', path]
    for source, target in node.remappings:
        command += ['-r', f'{source}:={target}']
    return Process(command, dict(node.additional_env), warnings)


@contextlib.contextmanager
def _standin_modules() -> Iterator[None]:
    modules = {
        'launch': {'LaunchDescription': LaunchDescription},
        'launch.actions': {'DeclareLaunchArgument': DeclareLaunchArgument,
                           'OpaqueFunction': OpaqueFunction},
        'launch.substitutions': {'LaunchConfiguration': LaunchConfiguration},
        'launch_ros': {},
        'launch_ros.actions': {'Node': Node},
    }
    saved = {name: sys.modules.get(name) for name in modules}
    for name, members in modules.items():
        module = types.ModuleType(name, 'recording stand-in (test/launch_standin.py)')
        module.__dict__.update(members)
        sys.modules[name] = module
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module


def launch_description() -> LaunchDescription:
    """generate_launch_description() of launch/detect.launch.py, on the stand-in."""
    with _standin_modules():
        spec = importlib.util.spec_from_file_location('detect_launch', LAUNCH_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.generate_launch_description()


def launch_processes(arguments: Dict[str, str], params_dir: Path) -> List[Process]:
    """The processes `ros2 launch ... detect.launch.py` with `arguments` starts. Errors the
    launch file raises propagate (launch reports them and exits 1)."""
    description = launch_description()
    declared = {entity.name: entity.default_value for entity in description.entities
                if isinstance(entity, DeclareLaunchArgument)}
    context = LaunchContext({**declared, **arguments})
    nodes = [node for entity in description.entities if isinstance(entity, OpaqueFunction)
             for node in entity.function(context)]
    return [_process(node, params_dir) for node in nodes]
