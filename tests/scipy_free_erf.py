"""A vectorised erf for the Monte-Carlo tests (numpy has none, scipy is not a dependency).

Abramowitz & Stegun 7.1.26: absolute error below 1.5e-7, far below the statistical
error of the Monte-Carlo estimates it is used for.
"""
import numpy as np


def erf(x):
    x = np.asarray(x, dtype=float)
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
                                                                        + t * 1.061405429))))
    return s * (1.0 - poly * np.exp(-a * a))
