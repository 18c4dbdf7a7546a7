"""Self-supervised training: backbones, losses, queues, methods (SimCLR, MoCo v2+, NNCLR) with the CLSP term."""
