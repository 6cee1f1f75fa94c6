"""The paper's model, one component per file: backbones/, encoders (cae.py and the Table 1
alternatives), car.py, decoders (usfpn.py), hfgm.py, layers/, losses.py, and model.py assembling
them from one ModelConfig."""
