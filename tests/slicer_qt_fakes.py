"""Stand-ins for the parts of 3D Slicer that slicer-core lacks (Qt widgets, the application, the
scripted-module base classes), so the module's widget code (``QuantitativeMaps.py``) runs here
against slicer-core's real MRML scene and a real server.

3D Slicer cannot be installed here (REFERENCE.md). These fakes model only what the widget uses,
with PythonQt's conventions: Qt properties as attributes (``combo.currentData``, ``label.text``),
signals connected by their signature (``connect("clicked(bool)", slot)``), a slot called with as
many of the signal's arguments as it takes, ``blockSignals``, and a combo box that emits
``currentIndexChanged`` when its index changes (also when its first item is added or it is
cleared). The widget tree comes from the module's own ``.ui`` file, so a widget name the code uses
and the .ui lacks fails here as in Slicer. What they cannot show: layout, painting, real dialogs
(the test sets each dialog's answer).
"""

from __future__ import annotations

import contextlib
import inspect
import types
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path


def _call(slot, args):
    """Call ``slot`` with as many of ``args`` as it accepts (PythonQt does the same)."""
    try:
        params = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return slot(*args)
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return slot(*args)
    n = sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    return slot(*args[:n])


class QObject:
    def __init__(self, name: str = ""):
        self.objectName = name
        self._slots = defaultdict(list)
        self._blocked = False

    def connect(self, signal: str, slot) -> None:
        self._slots[signal.split("(")[0]].append(slot)

    def blockSignals(self, block: bool) -> bool:
        old, self._blocked = self._blocked, bool(block)
        return old

    def emit(self, signal: str, *args) -> None:
        if not self._blocked:
            for slot in list(self._slots[signal]):
                _call(slot, args)


class FormLayout:
    def __init__(self):
        self.rows: list = []

    def addRow(self, label, widget=None):
        self.rows.append((label, widget))

    def removeRow(self, widget):
        self.rows = [r for r in self.rows if r[1] is not widget]

    def addWidget(self, widget):
        self.rows.append(("", widget))


class QWidget(QObject):
    def __init__(self, name: str = ""):
        super().__init__(name)
        self.enabled = True
        self.visible = True
        self.toolTip = ""
        self.styleSheet = ""
        self._layout = FormLayout()
        self.children: list = []

    def setStyleSheet(self, sheet: str) -> None:
        self.styleSheet = sheet

    def layout(self) -> FormLayout:
        return self._layout


class QLabel(QWidget):
    text = ""


class QLineEdit(QWidget):
    text = ""


class QPlainTextEdit(QWidget):
    def __init__(self, name: str = ""):
        super().__init__(name)
        self._text = ""

    @property
    def plainText(self) -> str:
        return self._text

    @plainText.setter
    def plainText(self, value: str) -> None:
        self._text = str(value)
        self.emit("textChanged")


class QPushButton(QWidget):
    text = ""

    def click(self) -> None:
        if self.enabled:
            self.emit("clicked", False)


class QSpinBox(QWidget):
    value = 0


class QProgressBar(QWidget):
    value = 0
    minimum, maximum = 0, 100

    def setRange(self, lo: int, hi: int) -> None:
        self.minimum, self.maximum = lo, hi


class ctkSliderWidget(QWidget):
    def __init__(self, name: str = ""):
        super().__init__(name)
        self._value = 0.0

    @property
    def value(self) -> float:
        return self._value

    @value.setter
    def value(self, v: float) -> None:
        if float(v) != self._value:
            self._value = float(v)
            self.emit("valueChanged", self._value)


class ctkCollapsibleButton(QWidget):
    collapsed = False


class QComboBox(QWidget):
    def __init__(self, name: str = ""):
        super().__init__(name)
        self.items: list[list] = []  # [text, data, {role: value}]
        self._index = -1

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def currentIndex(self) -> int:
        return self._index

    @currentIndex.setter
    def currentIndex(self, i: int) -> None:
        self.setCurrentIndex(i)

    def setCurrentIndex(self, i: int) -> None:
        i = int(i) if 0 <= int(i) < len(self.items) else -1
        if i != self._index:
            self._index = i
            self.emit("currentIndexChanged", i)

    @property
    def currentText(self) -> str:
        return self.items[self._index][0] if self._index >= 0 else ""

    @property
    def currentData(self):
        return self.items[self._index][1] if self._index >= 0 else None

    def addItem(self, text: str, data=None) -> None:
        self.items.append([text, data, {}])
        if self._index < 0:
            self.setCurrentIndex(0)

    def clear(self) -> None:
        self.items = []
        self.setCurrentIndex(-1)

    def findData(self, data) -> int:
        return next((i for i, it in enumerate(self.items) if it[1] == data), -1)

    def setItemData(self, i: int, value, role) -> None:
        self.items[i][2][role] = value

    def itemData(self, i: int, role=None):
        return self.items[i][1] if role is None else self.items[i][2].get(role)


class qMRMLNodeComboBox(QWidget):
    def __init__(self, name: str = ""):
        super().__init__(name)
        self.nodeTypes: list = []
        self.noneEnabled = self.addEnabled = self.removeEnabled = self.showChildNodeTypes = False
        self.attributes: list = []
        self.scene = None
        self._node = None

    def setMRMLScene(self, scene) -> None:
        self.scene = scene

    def addAttribute(self, node_type: str, name: str, value=None) -> None:
        self.attributes.append((node_type, name, value))

    def currentNode(self):
        if self._node is not None and self._node.GetScene() is None:  # removed from the scene
            self._node = None
        return self._node

    def setCurrentNode(self, node) -> None:
        if node is not self._node:
            self._node = node
            self.emit("currentNodeChanged", node)

    @property
    def currentNodeID(self) -> str:
        return self._node.GetID() if self._node is not None else ""


class qMRMLWidget(QWidget):
    def setMRMLScene(self, scene) -> None:  # the .ui connects mrmlSceneChanged to every MRML child
        for w in self.children:
            if hasattr(w, "setMRMLScene"):
                w.setMRMLScene(scene)


WIDGETS = {cls.__name__: cls for cls in (QWidget, QLabel, QLineEdit, QPlainTextEdit, QPushButton, QSpinBox, QProgressBar, QComboBox, ctkSliderWidget, ctkCollapsibleButton, qMRMLNodeComboBox, qMRMLWidget)}


def load_ui(path: str | Path) -> qMRMLWidget:
    """The widget tree of a Qt Designer file: every ``<widget>`` as its fake (an unknown class is an
    error, so the fakes grow with the .ui), reachable by name from the root's ``children``."""
    root = ET.parse(str(path)).getroot()
    top = root.find("widget")
    if top is None or top.get("class") not in WIDGETS:
        raise ValueError(f"{path}: the top widget class {None if top is None else top.get('class')} has no fake")
    ui = WIDGETS[top.get("class")](top.get("name"))
    for w in top.iter("widget"):
        if w is top:
            continue
        cls = WIDGETS.get(w.get("class"))
        if cls is None:
            raise ValueError(f"{path}: widget class {w.get('class')} ({w.get('name')}) has no fake")
        child = cls(w.get("name"))
        for prop in w.findall("property"):  # the initial values the widget code may read
            value = prop.find("string")
            if value is not None and prop.get("name") in ("text", "toolTip"):
                setattr(child, prop.get("name"), value.text or "")
            number = next((x for x in (prop.find("number"), prop.find("double")) if x is not None), None)
            if number is not None and prop.get("name") == "value":
                child.value = float(number.text) if number.tag == "double" else int(number.text)
        ui.children.append(child)
    return ui


def child_widget_variables(ui: qMRMLWidget):
    return types.SimpleNamespace(**{w.objectName: w for w in ui.children})


class Dialogs:
    """The answers the fake dialogs give (set by the test) and what they were asked."""

    def __init__(self):
        self.question_answer = "Yes"
        self.open_file = ""
        self.save_file = ""
        self.confirm = True
        self.errors: list[str] = []
        self.questions: list[str] = []


def make_qt(dialogs: Dialogs) -> types.ModuleType:
    qt = types.ModuleType("qt")
    for name, cls in WIDGETS.items():
        setattr(qt, name, cls)
    qt.QObject = QObject

    class QTimer(QObject):
        def __init__(self):
            super().__init__()
            self.interval, self.active = 0, False

        def setInterval(self, ms: int) -> None:
            self.interval = ms

        def start(self) -> None:
            self.active = True

        def stop(self) -> None:
            self.active = False

    class QSettings:
        store: dict = {}

        def value(self, key, default=None):
            return self.store.get(key, default)

        def setValue(self, key, value) -> None:
            self.store[key] = value

        def remove(self, key) -> None:
            self.store.pop(key, None)

    class QMessageBox:
        Yes, No = 0x4000, 0x10000  # Qt's StandardButton flags

        @staticmethod
        def question(parent, title, text, buttons=None, default=None):
            dialogs.questions.append(text)
            return {"Yes": QMessageBox.Yes, "No": QMessageBox.No}[dialogs.question_answer]

    class QFileDialog:
        @staticmethod
        def getOpenFileName(*args):
            return dialogs.open_file

        @staticmethod
        def getSaveFileName(*args):
            return dialogs.save_file

    qt.QTimer, qt.QSettings, qt.QMessageBox, qt.QFileDialog = QTimer, QSettings, QMessageBox, QFileDialog
    qt.Qt = types.SimpleNamespace(ToolTipRole=3)
    QSettings.store = {}
    return qt


def make_scripted_module(module_dir: Path) -> types.ModuleType:
    """``slicer.ScriptedLoadableModule``: the base classes as Slicer defines the parts used."""
    mod = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            pass

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent
            self.layout = FormLayout()

        def setup(self):
            pass

        def resourcePath(self, filename: str) -> str:
            return str(module_dir / "Resources" / filename)

    class ScriptedLoadableModuleTest:
        def delayDisplay(self, message, msec=None):
            pass

    mod.ScriptedLoadableModule = ScriptedLoadableModule
    mod.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    mod.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    mod.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    return mod


def install(monkeypatch, module_dir: Path):
    """Give slicer-core's ``slicer`` the application pieces Slicer has (a scene with its default
    nodes, the application logic, ``slicer.util``'s Qt helpers) and put the fake ``qt`` and
    ``slicer.ScriptedLoadableModule`` in ``sys.modules``; returns (slicer module, Dialogs)."""
    import sys

    import slicer

    dialogs = Dialogs()
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    for cls in ("vtkMRMLCrosshairNode", "vtkMRMLSelectionNode", "vtkMRMLInteractionNode"):
        if scene.GetFirstNodeByClass(cls) is None:
            scene.AddNewNodeByClass(cls)
    app = types.SimpleNamespace(applicationLogic=lambda: app_logic, layoutManager=lambda: None)

    @contextlib.contextmanager
    def try_with_error_display(message="", waitCursor=False, show=True):
        try:
            yield
        except Exception as e:
            dialogs.errors.append(f"{message}: {e}")
            raise

    @contextlib.contextmanager
    def wait_cursor():
        yield

    def error_display(text, windowTitle=None, **kw):
        dialogs.errors.append(text)

    monkeypatch.setitem(sys.modules, "qt", make_qt(dialogs))
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", make_scripted_module(module_dir))
    monkeypatch.setattr(slicer, "ScriptedLoadableModule", sys.modules["slicer.ScriptedLoadableModule"], raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setattr(slicer, "qMRMLNodeComboBox", qMRMLNodeComboBox, raising=False)
    for name, value in {
        "loadUI": load_ui,
        "childWidgetVariables": child_widget_variables,
        "mainWindow": lambda: None,
        "errorDisplay": error_display,
        "tryWithErrorDisplay": try_with_error_display,
        "WaitCursor": wait_cursor,
        "confirmOkCancelDisplay": lambda *a, **k: dialogs.confirm,
        "openAddVolumeDialog": lambda: None,
    }.items():
        monkeypatch.setattr(slicer.util, name, value, raising=False)
    return slicer, dialogs
