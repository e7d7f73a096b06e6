"""Every error metric of the project in one place, used by the benches, training validation and tests.

* :mod:`~qmri.metrics.maps`: map errors inside a mask (NRMSE, RMSE, HFEN, SSIM, the QSM set);
* :mod:`~qmri.metrics.synthrad`: SynthRAD2023's sCT/sMR metrics (MAE in HU, PSNR, SSIM, bone Dice);
* :mod:`~qmri.metrics.oef`: what a clinician reads off an OEF map (contrast recovery against
  mirror-image tissue, ROI-mean error, Pearson r native and smoothed, asymmetry, sd coverage).
"""
