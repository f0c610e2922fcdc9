"""Audio data: formats, PCM frames and codec packets, sample FIFOs, numpy <-> av.AudioFrame."""
