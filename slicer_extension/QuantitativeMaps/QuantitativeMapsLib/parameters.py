"""The module's state in the MRML scene (MRML only, no Qt): saved with the scene, restored with it.

Slicer keeps a scripted module's state in a singleton ``vtkMRMLScriptedModuleNode`` (what
``ScriptedLoadableModuleLogic.getParameterNode()`` returns and what ``parameterNodeWrapper`` wraps).
The module's input slots are made at run time from the server's ``/info`` (their number and kind
depend on the task), which a static ``parameterNodeWrapper`` class with ``SlicerParameterName``
bindings in the .ui cannot describe; so the state is kept here on the node directly: string
parameters (server, task, method, map, sidecar text, opacity) and node references (each task's
inputs, the anatomy, the ROI segmentation, the result on display). Saving the scene saves them;
loading it restores what was selected, per task.
"""

from __future__ import annotations

from typing import Any, Sequence

MODULE = "QuantitativeMaps"
#: String parameters kept on the node.
PARAMETERS = ("server", "task", "method", "map", "sidecar", "opacity")
#: Single node references kept on the node.
ROLES = ("anatomy", "segmentation", "result")


def _input_role(task: str, i: int) -> str:
    # node reference roles are written as "role:id;" in the .mrml file: no ':' or ';' in a role
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in task)
    return f"input_{safe}_{i}"


def parameter_node(scene, module: str = MODULE):
    """The module's singleton parameter node in ``scene`` (created when the scene has none), as
    Slicer's ``ScriptedLoadableModuleLogic.getParameterNode()`` makes it."""
    node = scene.GetSingletonNode(module, "vtkMRMLScriptedModuleNode")
    if node is None:
        node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        node.SetSingletonTag(module)
        node.SetName(module)
        node.SetAttribute("ModuleName", module)
        node = scene.AddNode(node)
    return node


class ModuleState:
    """Read and write the module's selections on its parameter node.

    Args:
        node: the module's ``vtkMRMLScriptedModuleNode`` (:func:`parameter_node`).
    """

    def __init__(self, node):
        self.node = node

    def set(self, key: str, value: Any) -> None:
        if key not in PARAMETERS:
            raise KeyError(f"unknown parameter '{key}'; known: {', '.join(PARAMETERS)}")
        self.node.SetParameter(key, "" if value is None else str(value))

    def get(self, key: str, default: str = "") -> str:
        if key not in PARAMETERS:
            raise KeyError(f"unknown parameter '{key}'; known: {', '.join(PARAMETERS)}")
        value = self.node.GetParameter(key)
        return value if value else default

    def set_node(self, role: str, node) -> None:
        if role not in ROLES:
            raise KeyError(f"unknown node role '{role}'; known: {', '.join(ROLES)}")
        self.node.SetNodeReferenceID(role, node.GetID() if node is not None else None)

    def get_node(self, role: str):
        if role not in ROLES:
            raise KeyError(f"unknown node role '{role}'; known: {', '.join(ROLES)}")
        return self.node.GetNodeReference(role)

    def set_inputs(self, task: str, nodes: Sequence[Any]) -> None:
        """The volumes picked for ``task``'s input slots, in slot order (None for an empty slot)."""
        i = 0
        while self.node.GetNodeReferenceID(_input_role(task, i)) is not None or i < len(nodes):
            self.node.SetNodeReferenceID(_input_role(task, i), nodes[i].GetID() if i < len(nodes) and nodes[i] is not None else None)
            i += 1

    def inputs(self, task: str, slots: int) -> list:
        """The volumes kept for ``task``'s first ``slots`` slots (None where none is kept)."""
        return [self.node.GetNodeReference(_input_role(task, i)) for i in range(slots)]
