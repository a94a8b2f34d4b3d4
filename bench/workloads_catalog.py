"""The bench models by name (no torch import, so runners can check names cheaply)."""

from __future__ import annotations

# name -> (role, batch, description); the batch is the GPU batch (tiny mode shrinks LP batches to 2)
CATALOG: dict[str, tuple[str, int, str]] = {
    # HP: batch-1 inference
    "resnet50": ("hp", 1, "torchvision resnet50, eager, b1 224x224"),
    "bert": ("hp", 1, "transformers BertModel(BertConfig()) b1 seq128, eager"),
    "vit_b_16": ("hp", 1, "torchvision vit_b_16, eager, b1 224x224"),
    "gpt2": ("hp", 1, "transformers GPT2Model(GPT2Config()) b1 seq128, eager"),
    "resnet50_graph": ("hp", 1, "resnet50 b1 captured in a torch.cuda.CUDAGraph, replayed"),
    "bert_graph": ("hp", 1, "BertModel b1 seq128 captured in a torch.cuda.CUDAGraph, replayed"),
    "resnet50_compile": ("hp", 1, "torch.compile(resnet50) b1 (inductor/Triton kernels)"),
    "bert_compile": ("hp", 1, "torch.compile(BertModel) b1 seq128 (inductor/Triton kernels)"),
    # LP: training and batch inference
    "resnet50_train": ("lp", 64, "resnet50 training step b64, SGD momentum"),
    "gpt2_train": ("lp", 8, "GPT2LMHeadModel training step b8 seq512, AdamW"),
    "vgg16_infer": ("lp", 64, "torchvision vgg16 inference b64"),
    "vgg16_train": ("lp", 16, "torchvision vgg16 training step b16 (cuBLAS + cuDNN)"),
    "bert_train": ("lp", 16, "BertForMaskedLM training step b16 seq128, AdamW"),
    # verify-only micro workloads
    "triton_add": ("hp", 1, "a @triton.jit vector add of 1M floats"),
    "add1": ("hp", 1, "x.add_(1) on a 1-element tensor: one tiny kernel per step"),
}
