"""Pure-PyTorch reference kernels of the state-space backbones, and dispatch to optional GPU kernels."""
from .conv import cauchy_sum, fft_conv, nplr_dense, nplr_kernel, vandermonde_kernel
from .dispatch import cuda_kernels_available
from .scan import linear_scan, selective_scan, zoh_weight
from .ssd import ssd_chunked

__all__ = ["cauchy_sum", "cuda_kernels_available", "fft_conv", "linear_scan", "nplr_dense", "nplr_kernel",
           "selective_scan", "ssd_chunked", "vandermonde_kernel", "zoh_weight"]
