#!/bin/bash
# The prepared GPU check (../shared/gpu/README.md): `pipeline train --backend jax` against a
# plain model.fit on the lent GPU machine, which has JAX on CUDA and no TensorFlow or Keras.
# Prepare .gpu/ here first (it is ignored: `echo /.gpu/ >> .git/info/exclude`):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
#     keras==3.15.1 namex optree scikit-learn joblib threadpoolctl matplotlib contourpy cycler \
#     kiwisolver fonttools pyparsing python-dateutil six pillow h5py rich pygments \
#     markdown-it-py mdurl absl-py typer click shellingham pyyaml ml_dtypes packaging narwhals
#   mkdir -p .gpu/mnist && cp ../shared/data/mnist/t10k* .gpu/mnist/
# then one device call carrying .gpu: `bash benchmarks/gpu_check.sh`.
# Only the wheels whose module the machine lacks are installed (Keras always), so its own
# JAX keeps the numpy, scipy and ml_dtypes it was built with.
set -u
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 --version
SITE=$(mktemp -d)
declare -A MOD=([absl_py]=absl [contourpy]=contourpy [fonttools]=fontTools [markdown_it_py]=markdown_it
 [pillow]=PIL [python_dateutil]=dateutil [pyyaml]=yaml [scikit_learn]=sklearn)
wanted=()
for wheel in .gpu/whl/*.whl; do
  name=$(basename "$wheel" | cut -d- -f1)
  module=${MOD[$name]:-$name}
  if [ "$name" = keras ] || ! python3 -c "import $module" 2>/dev/null; then wanted+=("$wheel"); fi
done
echo "installing: ${wanted[*]##*/}"
python3 -m pip install -q --no-index --no-deps --target "$SITE" "${wanted[@]}" || exit 3
export PYTHONPATH="$SITE:$PWD"
KERAS_BACKEND=jax python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)"
python3 -c "import tensorflow" 2>/dev/null && echo "tensorflow present" || echo "tensorflow absent"
timeout 420 python3 benchmarks/gpu_train.py --backend jax --tiles 6 --model resnet8 --batch 256 \
  --epochs 5 --repeats 2 --mnist .gpu/mnist 2>&1 | tail -8
