// The model configuration, read from a checkpoint's config.json (SPEC.md "Configuration").
// Field names are camelCase here; each comment names the config.json key it comes from.

export interface ModelConfig {
  /** model_type: "qwen2_parscale", or "qwen2" for plain Qwen2 checkpoints (then P = 1) */
  modelType: 'qwen2' | 'qwen2_parscale';
  /** hidden_size, H */
  hiddenSize: number;
  /** intermediate_size, I */
  intermediateSize: number;
  /** num_hidden_layers, L */
  numLayers: number;
  /** num_attention_heads, nH */
  numHeads: number;
  /** num_key_value_heads, nKV (grouped-query attention; nH % nKV == 0) */
  numKvHeads: number;
  /** head_dim, d (default H / nH) */
  headDim: number;
  /** vocab_size, V */
  vocabSize: number;
  /** rms_norm_eps */
  rmsNormEps: number;
  /** rope_theta */
  ropeTheta: number;
  /** max_position_embeddings */
  maxPositionEmbeddings: number;
  /** tie_word_embeddings: when true there is no lm_head.weight and the embedding is the head */
  tieWordEmbeddings: boolean;
  /** torch_dtype, as written ("bfloat16", "float16", "float32"), or null when absent */
  torchDtype: string | null;
  /** bos_token_id, or null */
  bosTokenId: number | null;
  /** eos_token_id, always as a list (config.json may hold a number or a list) */
  eosTokenIds: number[];
  /** parscale_n, P (1 for plain Qwen2) */
  parscaleN: number;
  /** parscale_n_tokens, T: prefix entries per stream, layer and KV head (default 48) */
  parscaleNTokens: number;
  /** parscale_attn_smooth, s (default 0.01) */
  parscaleAttnSmooth: number;
}

/** The tensors a checkpoint of this configuration must hold, with their shapes (SPEC.md "Tensors"). */
export function expectedTensors(config: ModelConfig): Map<string, number[]> {
  const { hiddenSize: H, intermediateSize: I, numHeads, numKvHeads, headDim: d, vocabSize: V } = config;
  const P = config.parscaleN;
  const T = config.parscaleNTokens;
  const shapes = new Map<string, number[]>();
  shapes.set('model.embed_tokens.weight', [V, H]);
  for (let i = 0; i < config.numLayers; i++) {
    const layer = `model.layers.${i}`;
    shapes.set(`${layer}.input_layernorm.weight`, [H]);
    shapes.set(`${layer}.self_attn.q_proj.weight`, [numHeads * d, H]);
    shapes.set(`${layer}.self_attn.q_proj.bias`, [numHeads * d]);
    shapes.set(`${layer}.self_attn.k_proj.weight`, [numKvHeads * d, H]);
    shapes.set(`${layer}.self_attn.k_proj.bias`, [numKvHeads * d]);
    shapes.set(`${layer}.self_attn.v_proj.weight`, [numKvHeads * d, H]);
    shapes.set(`${layer}.self_attn.v_proj.bias`, [numKvHeads * d]);
    shapes.set(`${layer}.self_attn.o_proj.weight`, [H, numHeads * d]);
    shapes.set(`${layer}.post_attention_layernorm.weight`, [H]);
    shapes.set(`${layer}.mlp.gate_proj.weight`, [I, H]);
    shapes.set(`${layer}.mlp.up_proj.weight`, [I, H]);
    shapes.set(`${layer}.mlp.down_proj.weight`, [H, I]);
    if (P > 1) {
      shapes.set(`${layer}.self_attn.prefix_k`, [P, numKvHeads, T, d]);
      shapes.set(`${layer}.self_attn.prefix_v`, [P, numKvHeads, T, d]);
    }
  }
  shapes.set('model.norm.weight', [H]);
  if (P > 1) {
    shapes.set('model.aggregate_layer.0.weight', [H, P * H]);
    shapes.set('model.aggregate_layer.0.bias', [H]);
    shapes.set('model.aggregate_layer.2.weight', [P, H]);
    shapes.set('model.aggregate_layer.2.bias', [P]);
  }
  if (!config.tieWordEmbeddings) shapes.set('lm_head.weight', [V, H]);
  return shapes;
}
