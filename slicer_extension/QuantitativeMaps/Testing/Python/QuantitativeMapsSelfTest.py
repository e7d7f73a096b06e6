"""Self-test of the Quantitative Maps module inside 3D Slicer (no server needed).

Run in Slicer: Developer mode on, module Quantitative Maps, "Reload and Test"; or via ctest after
building the extension. It loads a synthetic OEF result the way the module does after a Run and
checks the volumes, display and slice views Slicer actually shows.
"""

import unittest

import numpy as np
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest


class QuantitativeMapsSelfTest(ScriptedLoadableModuleTest):
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
        meta = {"maps": [{"name": n, "units": u, "channel": i} for i, (n, u) in enumerate(
            [("OEF", "%"), ("S0", "a.u."), ("R2", "1/s"), ("Y", "fraction"), ("v", "fraction"), ("chi_nb", "ppm")])]}
        nodes = logic.load_result(nib.Nifti1Image(maps, aff), meta, "oef", "test")
        self.assertEqual(len(nodes), 6)
        self.assertEqual(nodes[0].GetName(), "test OEF")
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


if __name__ == "__main__":
    unittest.main()
