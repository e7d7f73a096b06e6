"""The Slicer module file as Slicer loads it (no Qt here: read with ast and the XML parser)."""

from __future__ import annotations

import ast
import json
import xml.etree.ElementTree as ET

from conftest import REPO

MODULE = REPO / "slicer_extension" / "QuantitativeMaps"


def test_reload_and_test_finds_the_test_class():
    """Slicer's "Reload and Test" and ctest (slicer_add_python_unittest) look for <Module>Test in the
    module file, a ScriptedLoadableModuleTest with runTest."""
    tree = ast.parse((MODULE / "QuantitativeMaps.py").read_text())
    classes = {c.name: c for c in tree.body if isinstance(c, ast.ClassDef)}
    test = classes["QuantitativeMapsTest"]
    assert [b.id for b in test.bases if isinstance(b, ast.Name)] == ["ScriptedLoadableModuleTest"]
    methods = {f.name for f in test.body if isinstance(f, ast.FunctionDef)}
    assert {"runTest", "setUp", "test_module_widget_builds", "test_oef_result_over_anatomy"} <= methods
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in (MODULE / "CMakeLists.txt").read_text()


def test_module_calls_fit_through_the_version_guard():
    """No direct FitSliceToBackground() call (Slicer 5.6 needs the view size): only scene.fit_slice."""
    for f in [MODULE / "QuantitativeMaps.py", *(MODULE / "QuantitativeMapsLib").glob("*.py")]:
        calls = [n for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in ("FitSliceToBackground", "FitSliceToAll")]
        assert not calls, (f.name, [c.lineno for c in calls])


def test_ui_file_is_well_formed_with_the_widgets_the_module_uses():
    root = ET.parse(MODULE / "Resources" / "UI" / "QuantitativeMaps.ui").getroot()
    names = {w.get("name") for w in root.iter("widget")}
    used = set()
    for node in ast.walk(ast.parse((MODULE / "QuantitativeMaps.py").read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui":
            used.add(node.attr)
    assert used and used <= names, sorted(used - names)


def test_every_library_file_is_packaged_and_the_index_entry_builds_the_extension_folder():
    cmake = (MODULE / "CMakeLists.txt").read_text()
    for f in (MODULE / "QuantitativeMapsLib").glob("*.py"):
        assert f"${{MODULE_NAME}}Lib/{f.name}" in cmake, f.name
    entry = json.loads((MODULE.parent / "QMRI.json").read_text())
    assert (MODULE.parent.parent / entry["build_subdirectory"] / "CMakeLists.txt").is_file()
    top = (MODULE.parent.parent / entry["build_subdirectory"] / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert f"set({key} " in top, key
