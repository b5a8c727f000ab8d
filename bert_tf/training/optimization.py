"""Optimizers and the learning-rate schedule of BERT.

adamw: Google's AdamWeightDecayOptimizer semantics
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2          (no bias correction, as Google's;
                                                              --adam_bias_correction adds it)
    w -= lr * (m / (sqrt(v) + eps) + wd * w)                 (wd skipped for LayerNorm and biases)
lamb: You et al. 2019, as used for BERT-Large pre-training
    m_hat, v_hat bias-corrected;  u = m_hat / (sqrt(v_hat) + eps) + wd * w
    w -= lr * (||w|| / ||u||) * u                            (trust ratio 1 for LayerNorm/biases)
Schedule (Google's create_optimizer): the peak decays linearly to 0 over all num_train_steps,
and during the first num_warmup_steps the linear ramp 0 -> peak replaces it; so the rate right
after warm-up is peak * (1 - warmup / total). (Hugging Face's linear schedule instead decays
from the full peak over the steps after warm-up.)
Gradients are clipped to global norm 1.0 by the training loop after the allreduce.
"""

from __future__ import annotations

import keras
from keras import ops

# Variables never decayed nor layer-adapted: LayerNorm parameters and biases (Google's rule).
NO_DECAY_MARKERS = ("LayerNorm", "layer_norm", "bias")


def excluded(variable) -> bool:
    path = getattr(variable, "path", variable.name)
    return any(m in path for m in NO_DECAY_MARKERS)


@keras.saving.register_keras_serializable(package="bert_tf")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr(step) = peak * step / warmup for step < warmup, else peak * (1 - step / total),
    down to 0 (Google's polynomial decay of power 1 with its warm-up override)."""

    def __init__(self, peak_learning_rate, num_train_steps, num_warmup_steps):
        if num_train_steps < 1:
            raise ValueError(f"num_train_steps must be at least 1, got {num_train_steps}")
        if not 0 <= num_warmup_steps <= num_train_steps:
            raise ValueError(f"num_warmup_steps {num_warmup_steps} must be in "
                             f"[0, num_train_steps={num_train_steps}]")
        self.peak_learning_rate = float(peak_learning_rate)
        self.num_train_steps = int(num_train_steps)
        self.num_warmup_steps = int(num_warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak = self.peak_learning_rate
        warm = float(max(self.num_warmup_steps, 1))
        warmup_lr = peak * step / warm
        decay_lr = peak * ops.maximum(0.0, 1.0 - step / float(self.num_train_steps))
        return ops.where(step < self.num_warmup_steps, warmup_lr, decay_lr)

    def get_config(self):
        return {"peak_learning_rate": self.peak_learning_rate,
                "num_train_steps": self.num_train_steps,
                "num_warmup_steps": self.num_warmup_steps}


class _BertOptimizer(keras.optimizers.Optimizer):
    """Shared slots and decay rule; subclasses give the update direction."""

    def __init__(self, learning_rate, weight_decay_rate=0.01, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-6, name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, name=name or type(self).__name__.lower(),
                         **kwargs)
        self.weight_decay_rate = weight_decay_rate
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._m, self._v = self.add_optimizer_variables(var_list, ["m", "v"])

    def _moments(self, gradient, variable):
        index = self._get_variable_index(variable)
        m, v = self._m[index], self._v[index]
        g = ops.cast(gradient, variable.dtype)
        self.assign(m, ops.add(ops.multiply(m, self.beta_1), ops.multiply(g, 1.0 - self.beta_1)))
        self.assign(v, ops.add(ops.multiply(v, self.beta_2),
                               ops.multiply(ops.square(g), 1.0 - self.beta_2)))
        return m, v

    def _decay(self, variable):
        return 0.0 if excluded(variable) else self.weight_decay_rate

    def get_config(self):
        config = super().get_config()
        if hasattr(self, "bias_correction"):
            config["bias_correction"] = self.bias_correction
        config.update(weight_decay_rate=self.weight_decay_rate, beta_1=self.beta_1,
                      beta_2=self.beta_2, epsilon=self.epsilon)
        return config


class AdamWeightDecay(_BertOptimizer):
    """Google BERT's Adam with decoupled weight decay and no bias correction.

    bias_correction=True divides m and v by (1 - beta^t) as in Adam / torch's AdamW. Without it
    (Google's choice) the first few hundred updates are several times larger than Adam's, since
    sqrt(v) starts near zero; short fine-tunes of small models can feel that."""

    def __init__(self, learning_rate, bias_correction=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.bias_correction = bias_correction

    def update_step(self, gradient, variable, learning_rate):
        """One fused TensorFlow kernel per variable (plus one for the decay).

        The decay goes first, w *= 1 - lr * wd, then `ResourceApplyAdam` does the moments and
        w -= lr_t * m / (sqrt(v) + eps_t) in one pass over the weight. The direction does not
        depend on w, so decaying first is Google's w -= lr * (m / (sqrt(v) + eps) + wd * w)
        exactly. Without bias correction the kernel's beta powers are 0 (lr_t = lr, eps_t = eps);
        with it they are beta^t and eps_t = eps * sqrt(1 - beta_2^t), which turns the kernel's
        "epsilon hat" form into m_hat / (sqrt(v_hat) + eps), torch's AdamW. Written as a dozen
        Keras element-wise ops per weight this update cost about twice Model Garden's fused one
        (bench/README.md, "Where bert_tf's step goes")."""
        import tensorflow as tf

        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        index = self._get_variable_index(variable)
        m, v = self._m[index], self._v[index]
        decay = self._decay(variable)
        if decay:
            # w * (1 - lr wd) as one multiply whose result becomes the variable's buffer: 5.0 ms
            # for BERT's [30522,512] table on a 2-core CPU against 8.6 for the assign_sub form
            # (bench/profile_step.py kernels --only weight_decay)
            variable.assign(ops.multiply(variable, 1.0 - lr * decay))
        if self.bias_correction:
            step = ops.cast(self.iterations + 1, dtype)
            beta_1_power = ops.power(ops.cast(self.beta_1, dtype), step)
            beta_2_power = ops.power(ops.cast(self.beta_2, dtype), step)
            epsilon = self.epsilon * ops.sqrt(1.0 - beta_2_power)
        else:
            beta_1_power = beta_2_power = ops.zeros((), dtype)
            epsilon = ops.cast(self.epsilon, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=m.handle, v=v.handle, beta1_power=beta_1_power,
            beta2_power=beta_2_power, lr=lr, beta1=ops.cast(self.beta_1, dtype),
            beta2=ops.cast(self.beta_2, dtype), epsilon=epsilon,
            grad=ops.cast(gradient, dtype), use_locking=False)


class Lamb(_BertOptimizer):
    """LAMB: Adam direction with bias correction, scaled per layer by ||w|| / ||update||."""

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        m, v = self._moments(gradient, variable)
        m_hat = ops.divide(m, 1.0 - ops.power(self.beta_1, step))
        v_hat = ops.divide(v, 1.0 - ops.power(self.beta_2, step))
        update = ops.divide(m_hat, ops.add(ops.sqrt(v_hat), self.epsilon))
        if excluded(variable):
            ratio = 1.0
        else:
            update = ops.add(update, ops.multiply(variable, self.weight_decay_rate))
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            u_norm = ops.sqrt(ops.sum(ops.square(update)))
            ratio = ops.where(ops.logical_and(w_norm > 0, u_norm > 0),
                              ops.divide(w_norm, u_norm), 1.0)
        self.assign_sub(variable, ops.multiply(ops.multiply(lr, ratio), update))


OPTIMIZERS = {"adamw": AdamWeightDecay, "lamb": Lamb}


def create_optimizer(name, learning_rate, num_train_steps, num_warmup_steps,
                     weight_decay_rate=0.01, epsilon=1e-6, adam_bias_correction=False):
    """--optimizer, --learning_rate and the step counts -> an optimizer with the BERT schedule."""
    if name not in OPTIMIZERS:
        raise ValueError(f"--optimizer={name!r}: use one of {', '.join(OPTIMIZERS)}")
    if learning_rate <= 0:
        raise ValueError(f"--learning_rate={learning_rate} must be positive")
    schedule = WarmupLinearDecay(learning_rate, num_train_steps, num_warmup_steps)
    if name == "adamw":
        return AdamWeightDecay(schedule, bias_correction=adam_bias_correction,
                               weight_decay_rate=weight_decay_rate, epsilon=epsilon)
    return OPTIMIZERS[name](schedule, weight_decay_rate=weight_decay_rate, epsilon=epsilon)
