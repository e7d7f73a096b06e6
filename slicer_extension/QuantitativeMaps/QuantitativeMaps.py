"""Quantitative Maps: run qmri server tasks (OEF, QSM, PET PVC, synthetic CT/MR) from 3D Slicer.

This file is the thin Qt layer. Everything that can run without Qt lives in QuantitativeMapsLib:
``client`` (REST, consent, background jobs), ``presets`` (colour/window per map, input slots) and
``scene`` (MRML: result volumes, display, slice views), which the project tests headless.
"""

import json
import os
import re
import tempfile

import numpy as np
import qt
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

POLL_MS = 200
TRAIN_POLL_MS = 2000
SETTINGS_PREFIX = "QuantitativeMaps"


class QuantitativeMaps(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "Quantitative Maps"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = []
        self.parent.contributors = ["qmri project"]
        self.parent.helpText = """
Send volumes to a qmri server (MONAI Label app) and get quantitative maps back as float volumes:
oxygen extraction fraction (OEF %), susceptibility (ppm), partial-volume corrected PET (SUV),
synthetic CT (HU) and synthetic MR. Tasks, methods and units come from the server.
Images leave this computer only after you agree, once per server.
"""
        self.parent.acknowledgementText = "Built on MONAI Label and 3D Slicer."


def _ensure_nibabel():
    """nibabel reads/writes NIfTI for the server; Slicer does not bundle it."""
    try:
        import nibabel  # noqa: F401
    except ImportError:
        if not slicer.util.confirmOkCancelDisplay("Quantitative Maps needs the Python package 'nibabel'. Install it now?"):
            raise RuntimeError("nibabel is needed to exchange NIfTI files with the server")
        slicer.util.pip_install("nibabel")


class QuantitativeMapsLogic(ScriptedLoadableModuleLogic):
    """Glue between the client and the scene (no widgets): usable from Slicer's Python console."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        from QuantitativeMapsLib.scene import MapSceneLogic

        self.scene = MapSceneLogic(slicer.mrmlScene, slicer.app.applicationLogic())
        self.client = None

    def connect(self, url, consent):
        from QuantitativeMapsLib.client import QMRIClient

        self.client = QMRIClient(url, consent=consent)
        return self.client.tasks(refresh=True)

    def write_inputs(self, nodes, folder, name):
        """Stack the input volumes into one NIfTI (4D channels-last when several channels)."""
        array, affine = self.scene.stack_volumes(nodes)
        return self.scene.save_nifti(array, affine, os.path.join(folder, f"{name}.nii.gz"))

    def write_volume(self, node, folder, name):
        array, affine = self.scene.volume_array(node)
        return self.scene.save_nifti(array, affine, os.path.join(folder, f"{name}.nii.gz"))


class QuantitativeMapsWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.tasks = {}
        self.inputSelectors = []
        self.job = None
        self.jobKind = None
        self.resultNodes = []
        self.tmp = tempfile.TemporaryDirectory(prefix="qmri_slicer_")
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_MS)
        self.timer.connect("timeout()", self.onPoll)
        self.trainTimer = qt.QTimer()
        self.trainTimer.setInterval(TRAIN_POLL_MS)
        self.trainTimer.connect("timeout()", self.onTrainPoll)

    # ------------------------------------------------------------------ setup
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/QuantitativeMaps.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = QuantitativeMapsLogic()

        settings = qt.QSettings()
        self.ui.serverUrlEdit.text = settings.value(f"{SETTINGS_PREFIX}/lastServer", "http://127.0.0.1:8000")
        self.ui.connectButton.connect("clicked(bool)", self.onConnect)
        self.ui.forgetConsentButton.connect("clicked(bool)", self.onForgetConsent)
        self.ui.taskCombo.connect("currentIndexChanged(int)", self.onTaskChanged)
        self.ui.methodCombo.connect("currentIndexChanged(int)", self.onMethodChanged)
        self.ui.loadFilesButton.connect("clicked(bool)", lambda: slicer.util.openAddVolumeDialog())
        self.ui.loadSidecarButton.connect("clicked(bool)", self.onLoadSidecar)
        self.ui.fillSidecarButton.connect("clicked(bool)", self.onFillSidecar)
        self.ui.runButton.connect("clicked(bool)", self.onRun)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.opacitySlider.connect("valueChanged(double)", self.onOpacity)
        self.ui.resultSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onResultChanged)
        self.ui.windowCombo.connect("currentIndexChanged(int)", self.onWindowChanged)
        self.ui.sendCaseButton.connect("clicked(bool)", self.onSendTrainingCase)
        self.ui.trainButton.connect("clicked(bool)", self.onStartTraining)
        self.ui.stopTrainButton.connect("clicked(bool)", self.onStopTraining)
        self.ui.roiStatisticsButton.connect("clicked(bool)", self.onRoiStatistics)
        self.ui.roiExportButton.connect("clicked(bool)", self.onRoiExport)
        self.ui.roiRegionalButton.connect("clicked(bool)", self.onRoiRegional)
        self.roiRows = []
        self.ui.resultSelector.addAttribute("vtkMRMLScalarVolumeNode", "qmri.map")
        self.ui.compareSelector.addAttribute("vtkMRMLScalarVolumeNode", "qmri.map")
        self.ui.differenceButton.connect("clicked(bool)", self.onDifference)
        # the module's selections live on its parameter node, so a saved scene restores them
        self.ui.methodCombo.connect("currentIndexChanged(int)", lambda i: self.remember("method", self.ui.methodCombo.currentData))
        self.ui.mapCombo.connect("currentIndexChanged(int)", lambda i: self.remember("map", self.ui.mapCombo.currentData))
        self.ui.sidecarEdit.connect("textChanged()", lambda: self.remember("sidecar", self.ui.sidecarEdit.plainText))
        self.ui.anatomySelector.connect("currentNodeChanged(vtkMRMLNode*)", lambda n: self.rememberNode("anatomy", n))
        self.ui.roiSegmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", lambda n: self.rememberNode("segmentation", n))
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)
        self.observeCrosshair()
        self.setConnected(False)
        self.restoring = False
        self.restoreState()

    def cleanup(self):
        self.timer.stop()
        self.trainTimer.stop()
        if self.job is not None:
            self.job.cancel()
        self.removeObservers()
        self.tmp.cleanup()

    # ------------------------------------------------------------------ helpers
    def status(self, text, error=False):
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: #c0392b" if error else "")

    def showError(self, what, error):
        """The server's message in plain words (QMRIClientError already is one)."""
        self.status(f"{what}: {error}", error=True)
        slicer.util.errorDisplay(f"{what}.\n\n{error}", windowTitle="Quantitative Maps")

    # ------------------------------------------------------------------ state and scene
    def state(self):
        from QuantitativeMapsLib.parameters import ModuleState, parameter_node

        return ModuleState(parameter_node(slicer.mrmlScene))

    def remember(self, key, value):
        if not getattr(self, "restoring", False):
            self.state().set(key, value)

    def rememberNode(self, role, node):
        if not getattr(self, "restoring", False):
            self.state().set_node(role, node)

    def rememberInputs(self):
        if not getattr(self, "restoring", False) and self.currentTask():
            self.state().set_inputs(self.currentTask(), [combo.currentNode() for _, combo in self.inputSelectors])

    def restoreState(self):
        """Selections from the scene's parameter node (after a scene is loaded, or at start)."""
        state = self.state()
        self.restoring = True
        try:
            if state.get("server"):
                self.ui.serverUrlEdit.text = state.get("server")
            self.ui.sidecarEdit.plainText = state.get("sidecar")
            self.ui.anatomySelector.setCurrentNode(state.get_node("anatomy"))
            self.ui.roiSegmentationSelector.setCurrentNode(state.get_node("segmentation"))
            task = state.get("task")
            if task and self.ui.taskCombo.findData(task) >= 0:
                self.ui.taskCombo.setCurrentIndex(self.ui.taskCombo.findData(task))
                for key, combo in (("method", self.ui.methodCombo), ("map", self.ui.mapCombo)):
                    if combo.findData(state.get(key)) >= 0:
                        combo.setCurrentIndex(combo.findData(state.get(key)))
                for (slot, combo), node in zip(self.inputSelectors, state.inputs(task, len(self.inputSelectors))):
                    if node is not None:
                        combo.setCurrentNode(node)
        finally:
            self.restoring = False

    def onSceneStartClose(self, caller=None, event=None):
        if self.job is not None:  # its inputs and its result's place are going away
            self.job.cancel()
        self.ui.resultSelector.setCurrentNode(None)

    def onSceneEndClose(self, caller=None, event=None):
        self.resultNodes = []
        self.roiRows = []
        self.runContext = None
        self.ui.legendLabel.text = ""
        self.ui.probeLabel.text = ""
        self.ui.roiSummaryLabel.text = ""
        self.observeCrosshair()  # the scene's crosshair node is new
        self.restoreState()

    def onSceneEndImport(self, caller=None, event=None):
        self.observeCrosshair()
        self.restoreState()

    # ------------------------------------------------------------------ data probe with units
    def observeCrosshair(self):
        old = getattr(self, "crosshair", None)
        if old is not None:
            self.removeObserver(old, slicer.vtkMRMLCrosshairNode.CursorPositionModifiedEvent, self.onCursorMoved)
        self.crosshair = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
        if self.crosshair is not None:
            self.addObserver(self.crosshair, slicer.vtkMRMLCrosshairNode.CursorPositionModifiedEvent, self.onCursorMoved)

    def onCursorMoved(self, caller=None, event=None):
        """The value and unit of each map of the last run under the mouse (Slicer's own Data Probe
        shows values without units)."""
        nodes = [n for n in self.resultNodes if n.GetScene() is not None]
        ras = [0.0, 0.0, 0.0]
        if not nodes or self.crosshair is None or not self.crosshair.GetCursorPositionRAS(ras):
            return
        self.ui.probeLabel.text = self.logic.scene.probe_text(self.logic.scene.probe(nodes, ras))

    def setConnected(self, connected):
        for w in (self.ui.taskCombo, self.ui.methodCombo, self.ui.runButton, self.ui.sendCaseButton, self.ui.trainButton, self.ui.stopTrainButton):
            w.enabled = connected
        self.ui.cancelButton.enabled = False

    def consentKey(self, url):
        return f"{SETTINGS_PREFIX}/consent/{re.sub(r'[^A-Za-z0-9_.:-]', '_', url)}"

    def askConsent(self, what):
        """Explicit consent before any image leaves the machine, remembered per server."""
        client = self.logic.client
        settings = qt.QSettings()
        if client.consent or settings.value(self.consentKey(client.url), "false") == "true":
            client.grant_consent()
            return True
        answer = qt.QMessageBox.question(
            slicer.util.mainWindow(),
            "Send images to the server?",
            f"{what} will be sent to\n\n    {client.url}\n\nImages may contain information about the patient. Send images to this server? Your answer is remembered for this server only (use 'Forget consent' to be asked again).",
            qt.QMessageBox.Yes | qt.QMessageBox.No,
            qt.QMessageBox.No,
        )
        if answer != qt.QMessageBox.Yes:
            self.status("Nothing was sent: consent not given.")
            return False
        settings.setValue(self.consentKey(client.url), "true")
        client.grant_consent()
        return True

    def onForgetConsent(self):
        url = self.ui.serverUrlEdit.text.strip().rstrip("/")
        qt.QSettings().remove(self.consentKey(url))
        if self.logic.client is not None:
            self.logic.client.consent = False
        self.status(f"Consent for {url} forgotten: you will be asked before the next upload.")

    # ------------------------------------------------------------------ connect / tasks
    def onConnect(self):
        url = self.ui.serverUrlEdit.text.strip()
        try:
            with slicer.util.tryWithErrorDisplay("Could not connect", waitCursor=True):
                consent = qt.QSettings().value(self.consentKey(url.rstrip("/")), "false") == "true"
                self.tasks = self.logic.connect(url, consent)
        except Exception:
            self.setConnected(False)
            return
        qt.QSettings().setValue(f"{SETTINGS_PREFIX}/lastServer", url)
        self.remember("server", url)
        info = self.logic.client.info()
        self.ui.taskCombo.blockSignals(True)
        self.ui.taskCombo.clear()
        for name in sorted(self.tasks):
            self.ui.taskCombo.addItem(name, name)
            self.ui.taskCombo.setItemData(self.ui.taskCombo.count - 1, self.tasks[name].get("description", ""), qt.Qt.ToolTipRole)
        self.ui.taskCombo.blockSignals(False)
        self.setConnected(bool(self.tasks))
        self.status(f"Connected to {info.get('name', url)}: {len(self.tasks)} task(s), trainers: {', '.join(sorted(info.get('trainers', {}))) or 'none'}.")
        # the scene's saved task first (not overwritten by the combo's first entry), then its other selections
        self.restoring = True
        try:
            self.ui.taskCombo.blockSignals(True)
            self.ui.taskCombo.setCurrentIndex(max(0, self.ui.taskCombo.findData(self.state().get("task"))))
            self.ui.taskCombo.blockSignals(False)
            self.onTaskChanged()
        finally:
            self.restoring = False
        self.restoreState()

    def currentTask(self):
        return self.ui.taskCombo.currentData

    def onTaskChanged(self, index=None):
        task = self.currentTask()
        self.remember("task", task)
        info = self.tasks.get(task, {})
        self.ui.taskDescriptionLabel.text = info.get("description", "")
        self.ui.methodCombo.blockSignals(True)
        self.ui.methodCombo.clear()
        for m in info.get("methods", []):
            self.ui.methodCombo.addItem(m, m)
        default = info.get("default_method")
        if default is not None:
            self.ui.methodCombo.setCurrentIndex(max(0, self.ui.methodCombo.findData(default)))
        self.ui.methodCombo.blockSignals(False)
        self.onMethodChanged()
        outputs = info.get("outputs", {})
        self.ui.mapCombo.clear()
        self.ui.mapCombo.addItem("all maps", "")
        for name, o in outputs.items():
            self.ui.mapCombo.addItem(f"{name} ({o.get('units', '')})", name)
        self.ui.sidecarHintLabel.text = str((info.get("inputs") or {}).get("sidecar", "no acquisition metadata needed"))
        self.ui.trainButton.enabled = task in (self.logic.client.trainers() if self.logic.client else {})
        self.buildInputSelectors(task, info)

    def onMethodChanged(self, index=None):
        self.ui.methodCombo.toolTip = f"Method of {self.currentTask()}; default: {self.tasks.get(self.currentTask(), {}).get('default_method', '')}"

    def buildInputSelectors(self, task, info):
        from QuantitativeMapsLib.presets import input_slots

        for label, combo in self.inputSelectors:
            self.ui.inputsFrame.layout().removeRow(combo)
        self.inputSelectors = []
        for slot in input_slots(info):
            combo = slicer.qMRMLNodeComboBox()
            # a Volume Sequence (4D NRRD, multi-echo DICOM) can be picked as itself or as the volume the views show
            combo.nodeTypes = ["vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode", "vtkMRMLMultiVolumeNode", "vtkMRMLSequenceNode"]
            combo.noneEnabled = slot.optional
            combo.addEnabled = False
            combo.removeEnabled = False
            combo.showChildNodeTypes = True
            combo.setMRMLScene(slicer.mrmlScene)
            combo.toolTip = slot.label
            self.ui.inputsFrame.layout().addRow(slot.label + (" (optional)" if slot.optional else "") + ":", combo)
            self.inputSelectors.append((slot, combo))
        kept = self.state().inputs(task, len(self.inputSelectors)) if task else []
        self.restoring = True
        try:
            for (slot, combo), node in zip(self.inputSelectors, kept):
                if node is not None:
                    combo.setCurrentNode(node)
        finally:
            self.restoring = False
        for slot, combo in self.inputSelectors:
            combo.connect("currentNodeChanged(vtkMRMLNode*)", lambda n: self.rememberInputs())

    def onFillSidecar(self):
        """Fill the sidecar keys the scene knows (echo times, B0 direction) without touching the user's."""
        from QuantitativeMapsLib.acquisition import sidecar_from_scene

        try:
            current = json.loads(self.ui.sidecarEdit.plainText.strip() or "{}")
            if not isinstance(current, dict):
                raise ValueError("the acquisition metadata must be a JSON object")
            known = sidecar_from_scene([combo.currentNode() for _, combo in self.inputSelectors], self.tasks.get(self.currentTask(), {}))
        except Exception as e:
            self.showError("Cannot read the acquisition from the volumes", e)
            return
        added = {k: v for k, v in known.items() if k not in current}
        self.ui.sidecarEdit.plainText = json.dumps({**current, **added}, indent=1)
        self.status(f"From the volumes: {', '.join(added) or 'nothing new'} (B0 along the scanner's z axis; check echo times against the protocol).")

    def onLoadSidecar(self):
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "Acquisition sidecar (JSON)", "", "JSON (*.json)")
        if path:
            with open(path) as fh:
                self.ui.sidecarEdit.plainText = json.dumps(json.load(fh), indent=1)

    # ------------------------------------------------------------------ run
    def requestParams(self):
        text = self.ui.sidecarEdit.plainText.strip() or "{}"
        try:
            sidecar = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"the acquisition metadata is not valid JSON: {e}") from None
        if not isinstance(sidecar, dict):
            raise ValueError("the acquisition metadata must be a JSON object")
        from QuantitativeMapsLib.acquisition import sidecar_from_scene

        # what the volumes say fills the keys the user left out (the image travels without a sidecar file)
        known = sidecar_from_scene([combo.currentNode() for _, combo in self.inputSelectors], self.tasks.get(self.currentTask(), {}))
        sidecar = {**known, **sidecar}
        params = {"method": self.ui.methodCombo.currentData}
        if sidecar:
            params["sidecar"] = sidecar
        if self.ui.mapCombo.currentData:
            params["map"] = self.ui.mapCombo.currentData
        return params

    def selectedInputs(self):
        nodes = []
        for slot, combo in self.inputSelectors:
            node = combo.currentNode()
            if node is None and not slot.optional:
                raise ValueError(f"select the input: {slot.label}")
            if node is not None:
                nodes.append(node)
        return nodes

    def onRun(self):
        from QuantitativeMapsLib.client import Job, run_task

        task = self.currentTask()
        try:
            _ensure_nibabel()
            nodes = self.selectedInputs()
            params = self.requestParams()
        except Exception as e:
            self.showError("Cannot run", e)
            return
        if not self.askConsent(", ".join(f"'{n.GetName()}'" for n in nodes)):
            return
        name = re.sub(r"[^A-Za-z0-9_-]", "_", f"{nodes[0].GetName()}_{task}")
        try:
            with slicer.util.WaitCursor():
                path = self.logic.write_inputs(nodes, self.tmp.name, name)  # MRML access: main thread
        except Exception as e:
            self.showError("Cannot prepare the inputs", e)
            return
        client = self.logic.client
        # a Volume Sequence picked as itself is no slice-view layer: the views keep their background then
        background = nodes[0] if nodes[0].IsA("vtkMRMLVolumeNode") else None
        self.runContext = {"task": task, "base": nodes[0].GetName(), "background": background}
        # the image travels with the request and is not stored on the server
        self.startJob(Job(lambda job: run_task(client, task, path, None, params, job)), "infer")

    def startJob(self, job, kind):
        self.job, self.jobKind = job.start(), kind
        self.ui.runButton.enabled = False
        self.ui.sendCaseButton.enabled = False
        self.ui.cancelButton.enabled = True
        self.ui.progressBar.setRange(0, 0)  # busy: the server does not report percentages
        self.ui.progressBar.visible = True
        self.timer.start()

    def onCancel(self):
        if self.job is not None:
            self.job.cancel()

    def onPoll(self):
        job = self.job
        if job is None:
            self.timer.stop()
            return
        self.status(f"{job.stage.capitalize()}... {job.elapsed_s:.0f} s")
        if not job.done:
            return
        self.timer.stop()
        self.job = None
        self.ui.progressBar.setRange(0, 1)
        self.ui.progressBar.visible = False
        self.ui.cancelButton.enabled = False
        self.ui.runButton.enabled = True
        self.ui.sendCaseButton.enabled = True
        if job.stage == "cancelled":
            self.status("Cancelled. (The server may still finish the computation; its result is discarded.)")
            return
        if job.error is not None:
            self.showError("The server could not do it" if self.jobKind == "infer" else "Sending the training case failed", job.error)
            return
        if self.jobKind == "infer":
            self.loadResult(job.result)
        elif self.jobKind == "regions":
            self.showRegions(job.result)
        else:
            self.status("Training case stored on the server: its reference map is the study's labels/final target.")

    def loadResult(self, result):
        ctx = self.runContext
        try:
            with slicer.util.WaitCursor():
                nodes = self.logic.scene.load_result(result.image(), result.meta, ctx["task"], ctx["base"])
        except Exception as e:
            self.showError("Could not load the result", e)
            return
        self.resultNodes = nodes
        background = self.ui.anatomySelector.currentNode() or ctx["background"]
        if nodes[0].GetAttribute("qmri.blend") == "0":
            self.ui.opacitySlider.value = 0  # a grey image on its own; the slider fades the anatomy in
        self.ui.resultSelector.setCurrentNode(nodes[0])
        self.logic.scene.show_overlay(background, nodes[0], self.ui.opacitySlider.value / 100.0)
        self.logic.scene.add_colour_legend(nodes[0])
        took = result.meta.get("latency_s")
        self.status(f"Loaded {len(nodes)} map(s): {', '.join(n.GetName() for n in nodes)}" + (f" (server: {took:.1f} s)." if took is not None else "."))

    # ------------------------------------------------------------------ display
    def onOpacity(self, value):
        self.logic.scene.set_opacity(value / 100.0)

    def onResultChanged(self, node):
        self.ui.windowCombo.blockSignals(True)
        self.ui.windowCombo.clear()
        self.ui.windowCombo.addItem("default", "default")
        if node is None:
            self.ui.windowCombo.blockSignals(False)
            self.ui.legendLabel.text = ""
            return
        preset = self.logic.scene.node_preset(node)
        for name in preset.windows:
            self.ui.windowCombo.addItem(name, name)
        self.ui.windowCombo.blockSignals(False)
        self.updateLegendLabel(node)
        if self.logic.client is not None:
            background = self.ui.anatomySelector.currentNode()
            comps = slicer.mrmlScene.GetNodesByClass("vtkMRMLSliceCompositeNode")
            if background is None and comps.GetNumberOfItems():
                background = slicer.mrmlScene.GetNodeByID(comps.GetItemAsObject(0).GetBackgroundVolumeID() or "")
            if background is node:  # a grey image shown on its own: the anatomy is in the other layer
                background = slicer.mrmlScene.GetNodeByID(comps.GetItemAsObject(0).GetForegroundVolumeID() or "")
            self.logic.scene.show_overlay(background, node, self.ui.opacitySlider.value / 100.0, fit=False)
            self.logic.scene.add_colour_legend(node)

    def updateLegendLabel(self, node):
        dn = node.GetDisplayNode()
        self.ui.legendLabel.text = f"{node.GetAttribute('qmri.legend_title') or node.GetName()}: {dn.GetWindowLevelMin():.3g} .. {dn.GetWindowLevelMax():.3g}, colours: {dn.GetColorNode().GetName()}"

    def onWindowChanged(self, index):
        node = self.ui.resultSelector.currentNode()
        if node is None or self.ui.windowCombo.currentData is None:
            return
        self.logic.scene.apply_preset(node, self.logic.scene.node_preset(node), self.ui.windowCombo.currentData)  # "default": the load-time window
        self.updateLegendLabel(node)

    def onDifference(self):
        a, b = self.ui.resultSelector.currentNode(), self.ui.compareSelector.currentNode()
        try:
            if a is None or b is None or a is b:
                raise ValueError("select two different maps: the shown map and the one to compare with")
            with slicer.util.WaitCursor():
                node = self.logic.scene.difference(a, b)
        except Exception as e:
            self.showError("Cannot compare the maps", e)
            return
        self.resultNodes = [a, b, node]  # the probe then reads both maps and their difference
        self.ui.resultSelector.setCurrentNode(node)
        self.status(f"Difference '{node.GetName()}' shown (blue: map lower, red: map higher).")

    # ------------------------------------------------------------------ ROI statistics
    def onRoiStatistics(self):
        from QuantitativeMapsLib.roi_statistics import segment_statistics, statistics_table

        maps = [n for n in self.resultNodes if n.GetScene() is not None] or [n for n in [self.ui.resultSelector.currentNode()] if n is not None]
        try:
            with slicer.util.WaitCursor():
                self.roiRows = segment_statistics(self.ui.roiSegmentationSelector.currentNode(), maps)
                table = statistics_table(slicer.mrmlScene, self.roiRows, name=slicer.mrmlScene.GenerateUniqueName("qmri ROI statistics"))
        except Exception as e:
            self.showError("Cannot compute ROI statistics", e)
            return
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()
        lines = [
            f"{r['segment']} / {r['map']}: {r['mean']:.4g} +- {r['sd']:.3g} {r['units']} (median {r['median']:.4g}, {r['volume_ml']:.3g} ml)" if r["mean"] is not None else f"{r['segment']} / {r['map']}: no voxels on this map" for r in self.roiRows
        ]
        self.ui.roiSummaryLabel.text = "\n".join(lines[:12]) + ("\n..." if len(lines) > 12 else "")
        self.status(f"ROI statistics: {len(self.roiRows)} row(s) in table '{table.GetName()}'.")

    def onRoiRegional(self):
        """The OEF of each segment by the server's regional QQ fit (the inputs and the segments, as a
        label map on the inputs' grid, are sent; the answer is a table, no map is loaded)."""
        from QuantitativeMapsLib.client import Job, run_task
        from QuantitativeMapsLib.roi_statistics import segments_label_map

        task = self.currentTask()
        try:
            if task != "oef":
                raise ValueError("regional OEF needs the OEF task: pick it and its inputs (echoes and QSM)")
            _ensure_nibabel()
            nodes = self.selectedInputs()
            params = {**self.requestParams(), "map": "OEF"}
            seg = self.ui.roiSegmentationSelector.currentNode()
            if seg is None:
                raise ValueError("select a segmentation (draw the regions in Segment Editor first)")
            grid = next((n for n in nodes if n.IsA("vtkMRMLScalarVolumeNode")), None)
            if grid is None:
                raise ValueError("the inputs hold no volume whose grid the segments can be written on")
        except Exception as e:
            self.showError("Cannot compute regional OEF", e)
            return
        if not self.askConsent(", ".join(f"'{n.GetName()}'" for n in nodes) + f" and the segments of '{seg.GetName()}'"):
            return
        name = re.sub(r"[^A-Za-z0-9_-]", "_", f"{nodes[0].GetName()}_{task}")
        try:
            with slicer.util.WaitCursor():
                path = self.logic.write_inputs(nodes, self.tmp.name, name)
                label = os.path.join(self.tmp.name, f"{name}_segments.nii.gz")
                names = segments_label_map(seg, grid, label)
        except Exception as e:
            self.showError("Cannot prepare the inputs", e)
            return
        client = self.logic.client
        self.runContext = {"task": task, "base": nodes[0].GetName(), "background": None, "region_names": names}
        self.startJob(Job(lambda job: run_task(client, task, path, None, params, job, label=label)), "regions")

    def showRegions(self, result):
        from QuantitativeMapsLib.roi_statistics import regional_rows, regional_table

        try:
            rows = regional_rows(result.meta.get("regions") or [], self.runContext["region_names"])
            table = regional_table(slicer.mrmlScene, rows, name=slicer.mrmlScene.GenerateUniqueName("qmri regional OEF"))
        except Exception as e:
            self.showError("Could not read the regional answer", e)
            return
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()
        lines = []
        for r in rows:
            line = f"{r['segment']}: OEF {r['value']:.1f} +- {r['sd']:.1f} % (95 %: {r['ci95']})"
            if r["difference"] is not None:
                line += f"; mirror {r['mirror']:.1f} %, difference {r['difference']:+.1f} ({r['difference_ci95']})"
            if not r["informative"].startswith("yes"):
                line += "; not resolved by these echoes"
            lines.append(line)
        self.ui.roiSummaryLabel.text = "\n".join(lines[:12]) + ("\n..." if len(lines) > 12 else "")
        self.status(f"Regional OEF of {len(rows)} segment(s) in table '{table.GetName()}'.")

    def onRoiExport(self):
        from QuantitativeMapsLib.roi_statistics import write_csv

        if not self.roiRows:
            self.showError("Nothing to export", "compute the ROI statistics first")
            return
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), "ROI statistics (CSV)", "roi_statistics.csv", "CSV (*.csv)")
        if path:
            write_csv(self.roiRows, path)
            self.status(f"ROI statistics written to {path}.")

    # ------------------------------------------------------------------ retrain
    def onSendTrainingCase(self):
        from QuantitativeMapsLib.client import Job, add_training_case

        reference = self.ui.referenceSelector.currentNode()
        case_id = re.sub(r"[^A-Za-z0-9_-]", "_", self.ui.caseIdEdit.text.strip())
        try:
            _ensure_nibabel()
            if reference is None:
                raise ValueError("select the reference map (the training target)")
            if not case_id:
                raise ValueError("enter a study id for the new training case")
            nodes = self.selectedInputs()
            params = self.requestParams()
        except Exception as e:
            self.showError("Cannot send the training case", e)
            return
        if not self.askConsent(", ".join(f"'{n.GetName()}'" for n in nodes + [reference])):
            return
        try:
            image = self.logic.write_inputs(nodes, self.tmp.name, case_id)
            label = self.logic.write_volume(reference, self.tmp.name, case_id + "_reference")
            self.logic.scene.stack_volumes([nodes[0], reference])  # same shape and IJK-to-RAS, else it names the mismatch
        except Exception as e:
            self.showError("Cannot prepare the training case", e)
            return
        client, sidecar, task = self.logic.client, params.get("sidecar", {}), self.currentTask()
        # the case is declared for this task's trainer: the server refuses (422, with the reason) one it would skip
        self.startJob(Job(lambda job: add_training_case(client, case_id, image, label, sidecar, job, task=task)), "case")

    def onStartTraining(self):
        task = self.currentTask()
        try:
            self.logic.client.train_start(task, {"max_epochs": int(self.ui.epochsSpinBox.value)})
        except Exception as e:
            self.showError(f"Training of {task} did not start", e)
            return
        self.ui.trainStatusLabel.text = f"Training {task}: submitted"
        self.trainTimer.start()

    def onStopTraining(self):
        try:
            self.logic.client.train_stop()
        except Exception as e:
            self.showError("Could not stop training", e)

    def onTrainPoll(self):
        try:
            st = self.logic.client.train_status()
        except Exception as e:
            self.trainTimer.stop()
            self.ui.trainStatusLabel.text = f"Training status unavailable: {e}"
            return
        if not st:
            return
        from QuantitativeMapsLib.client import training_progress

        state = st.get("status", "?")
        fraction, text = training_progress(st)
        self.ui.trainStatusLabel.text = f"Training {text} (since {st.get('start_ts', '')})"
        self.ui.progressBar.visible = state in ("SUBMITTED", "RUNNING")
        if fraction is None:
            self.ui.progressBar.setRange(0, 0)  # busy until the first step is reported
        else:
            self.ui.progressBar.setRange(0, 1000)
            self.ui.progressBar.value = int(round(1000 * fraction))
        if state in ("DONE", "ERROR", "STOPPED"):
            self.trainTimer.stop()
            if state == "DONE":
                self.status("Training finished: the next Run uses the new model (the server loads it, no restart).")
            elif state == "ERROR":
                self.showError("Training failed on the server", "\n".join(str(x) for x in (st.get("details") or [])[-5:]))


class QuantitativeMapsTest(ScriptedLoadableModuleTest):
    """Slicer's "Reload and Test" and ctest run this (no server needed): the module widget builds, and a
    synthetic OEF result is loaded the way the module does after a Run, then checked in the scene."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_module_widget_builds()
        self.setUp()
        self.test_oef_result_over_anatomy()

    def test_module_widget_builds(self):
        slicer.util.selectModule("QuantitativeMaps")
        widget = slicer.modules.QuantitativeMapsWidget
        self.assertEqual(widget.ui.serverUrlEdit.text.startswith("http"), True)
        self.assertFalse(widget.ui.runButton.enabled)  # nothing to run before connecting

    def test_oef_result_over_anatomy(self):
        try:
            import nibabel as nib
        except ImportError:
            slicer.util.pip_install("nibabel")
            import nibabel as nib
        from QuantitativeMapsLib.scene import MapSceneLogic

        logic = MapSceneLogic(slicer.mrmlScene, slicer.app.applicationLogic())
        aff = np.diag([2.0, 2.0, 2.0, 1.0])
        aff[:3, 3] = [-20, -20, -10]
        anat = logic.add_volume(np.random.default_rng(0).uniform(0, 1, (20, 20, 10)).astype(np.float32), aff, "anatomy")
        maps = np.zeros((20, 20, 10, 6), np.float32)
        maps[5:15, 5:15, 2:8] = [35, 1, 20, 0.63, 0.03, 0.01]
        # as the server sends them: units, display range and display hint per map (qmri.io.display)
        hints = {
            "OEF": ("%", [0, 80], "rainbow", 1e-3),
            "S0": ("a.u.", [0, 1], "grey", 1e-6),
            "R2": ("1/s", [0, 40], "rainbow", 1e-3),
            "Y": ("fraction", [0, 1], "rainbow", 1e-4),
            "v": ("fraction", [0, 0.1], "rainbow", 1e-6),
            "chi_nb": ("ppm", [-0.2, 0.2], "diverging", None),
        }
        meta = {
            "method": "qq_fit",
            "maps": [{"name": n, "units": u, "display_range": r, "channel": i, "display": {"colormap": c, "legend": f"{n} ({u})", "threshold": t}} for i, (n, (u, r, c, t)) in enumerate(hints.items())],
        }
        nodes = logic.load_result(nib.Nifti1Image(maps, aff), meta, "oef", "test")
        self.assertEqual(len(nodes), 6)
        self.assertEqual(nodes[0].GetName(), "test OEF [qq_fit]")
        self.assertAlmostEqual(slicer.util.arrayFromVolume(nodes[0])[5, 10, 10], 35.0)  # array is k, j, i
        dn = nodes[0].GetDisplayNode()
        self.assertAlmostEqual(dn.GetWindowLevelMax(), 80.0)
        self.assertTrue(dn.GetApplyThreshold())
        logic.show_overlay(anat, nodes[0], 0.5)
        red = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceCompositeNode()
        self.assertEqual(red.GetBackgroundVolumeID(), anat.GetID())
        self.assertEqual(red.GetForegroundVolumeID(), nodes[0].GetID())
        self.assertAlmostEqual(red.GetForegroundOpacity(), 0.5)
        legend = logic.add_colour_legend(nodes[0])
        self.assertEqual(legend.GetTitleText(), "OEF (%)")
        self.delayDisplay("OEF map over anatomy: test passed")
