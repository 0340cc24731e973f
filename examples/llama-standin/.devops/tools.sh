#!/bin/bash
# Entry point of the `full` image: one sub-command per tool, run from /app (the image's
# working directory), like upstream's .devops/tools.sh.
set -e

arg1="${1:-}"
shift || true

case "$arg1" in
    --convert|-c)
        exec python3 ./convert_hf_to_gguf.py "$@" ;;
    --run|-r)
        exec ./llama-cli "$@" ;;
    --server|-s)
        exec ./llama-server "$@" ;;
    --version|-v)
        exec ./llama-cli --version ;;
    *)
        echo "Unknown command: $arg1"
        echo "Available commands: "
        echo "  --convert (-c): convert a Hugging Face model folder to GGUF"
        echo "              ex: --convert /models/my-model --outfile /models/my-model.gguf"
        echo "  --run (-r): run llama-cli"
        echo "              ex: -m /models/my-model.gguf -p \"Building a website can be done in 10 simple steps:\" -n 512"
        echo "  --server (-s): run llama-server"
        echo "              ex: -m /models/my-model.gguf --port 8080"
        echo "  --version (-v): print the build"
        exit 1 ;;
esac
