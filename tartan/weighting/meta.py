"""META-TARTAN (Dery et al. 2021, Algorithm 1): task weights learned online from how well each task's
gradient agrees with the gradient of the end task's dev loss.

Per weight update: each task's gradient w.r.t. the shared body; a meta head, fresh each update,
trained for a few steps on the end task's train batch with the body frozen (the step's own batch,
or another: `head_batch`); the dev gradient, of the
end task's loss on a dev batch through body + meta head; weight logit += lr x cos(task gradient, dev
gradient) for every task, the end task included. The body steps on the softmax(logits) mix of the
task gradients; each head steps on its own task's gradient, unweighted."""
from __future__ import annotations

import torch

from ..data.batching import to_device
from ..tasks.mlm import stable_seed  # below 2**63, alike in every process
from ..training.distributed import average_list_across_processes, global_share, shard_rows
from . import StepInputs, WeightingStrategy, strategies


@strategies.register("meta")
class MetaWeighting(WeightingStrategy):
    def __init__(self, task_names: list[str], end_task: str, lr: float = 0.1, head: str = "separate",
                 update_every: int = 1, head_steps: int = 10, head_lr: float = 1e-3,
                 head_weight_decay: float = 0.1, dev_batch_size: int = 16, head_batch: str = "step", seed: int = 0,
                 **options):
        super().__init__(task_names, end_task)
        self.lr, self.head, self.update_every, self.head_batch = lr, head, update_every, head_batch
        self.head_steps, self.head_lr, self.head_weight_decay = head_steps, head_lr, head_weight_decay
        self.dev_batch_size, self.seed = dev_batch_size, seed
        self.logits = torch.zeros(len(self.task_names), dtype=torch.float64)  # equal weights at the start
        self.cosines: dict[str, float] = {}
        # how well the meta head fits: its loss on the end-task batch it trained on, after training,
        # and the dev loss it passes the gradient of (log(classes) is chance)
        self.meta_head_losses: dict[str, float] = {}

    @property
    def weights(self) -> dict[str, float]:
        return dict(zip(self.task_names, torch.softmax(self.logits, 0).tolist()))

    def backward(self, losses: dict[str, torch.Tensor], inputs: StepInputs) -> dict[str, float]:
        body = [p for p in inputs.model.body.parameters() if p.requires_grad]
        task_gradients = self.task_gradients(losses, inputs, body)
        if inputs.step % self.update_every == 0:
            dev_gradient = self.dev_gradient(inputs, body)
            dev_norm = _norm(dev_gradient)
            cosines = torch.stack([_dot(gradient, dev_gradient) / (_norm(gradient) * dev_norm).clamp_min(1e-12)
                                   for gradient in task_gradients])
            self.logits += self.lr * cosines.double()
            self.cosines = dict(zip(self.task_names, cosines.tolist()))
        mix = torch.softmax(self.logits, 0).tolist()
        for i, p in enumerate(body):
            # the mixed gradient written once per parameter, each task's gradient read once
            mixed = task_gradients[0][i].mul(mix[0])
            for weight, gradient in zip(mix[1:], task_gradients[1:]):
                mixed.add_(gradient[i], alpha=weight)
            p.grad = mixed if p.grad is None else p.grad + mixed
        return self.weights

    def task_gradients(self, losses: dict[str, torch.Tensor], inputs: StepInputs, body: list) -> list[list[torch.Tensor]]:
        """Per task, its gradient w.r.t. each body parameter, averaged across processes. Kept as the
        tensors autograd returns: flattening them into one matrix copied 22M floats per task per step.
        Each head's gradient goes straight to its .grad."""
        per_task = []
        for name in self.task_names:
            head = [p for p in inputs.model.heads[name].parameters() if p.requires_grad]
            # the tasks' graphs share only parameters, so each is walked once: together these cost
            # what one backward of the summed losses costs
            gradients = torch.autograd.grad(losses[name], body + head, allow_unused=True)
            per_task.append(average_list_across_processes(_zeros_for_none(gradients[:len(body)], body),
                                                          inputs.accelerator))
            for p, g in zip(head, gradients[len(body):]):
                if g is not None:
                    p.grad = g if p.grad is None else p.grad + g
        return per_task

    def dev_gradient(self, inputs: StepInputs, body: list) -> list[torch.Tensor]:
        """The gradient w.r.t. each body parameter of the end task's loss on a dev batch, through the
        meta head (or, for the same-head ablation, the end task's own head); averaged across processes."""
        task, model, accelerator = inputs.tasks[self.end_task], inputs.model, inputs.accelerator
        # every process must draw the same meta head and dev batch: seed from (seed, step), not from
        # the process's random state
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stable_seed(self.seed, inputs.step))
            head = model.heads[self.end_task] if self.head == "same" else self.train_meta_head(inputs)
            dev = self.dev_batch(task, inputs)
            with accelerator.autocast():
                loss = task.loss(head(model.encode(dev), dev), dev)
            gradients = torch.autograd.grad(loss * global_share(task, dev, accelerator), body, allow_unused=True)
            self.meta_head_losses["dev"] = float(loss.detach())
        return average_list_across_processes(_zeros_for_none(gradients, body), accelerator)

    def train_meta_head(self, inputs: StepInputs) -> torch.nn.Module:
        """A fresh end-task head trained on end-task train features: those of this step's batch (the
        body's output from the step's own forward pass, so the body does not run again), or, with
        head_batch=other, those of another train batch."""
        task, accelerator = inputs.tasks[self.end_task], inputs.accelerator
        if self.head_batch == "other":
            features, batch = self.other_train_batch(task, inputs)
        else:
            features, batch = inputs.features[self.end_task], inputs.batches[self.end_task]
            if accelerator.num_processes > 1:  # every process trains the same head on the global batch
                features, batch = _gather_rows(features, batch, accelerator)
        features = features.float()
        meta_head = task.make_head(inputs.model.body).to(features.device)
        optimizer = torch.optim.AdamW(meta_head.parameters(), lr=self.head_lr, weight_decay=self.head_weight_decay)
        for _ in range(self.head_steps):
            loss = task.loss(meta_head(features, batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            self.meta_head_losses["train"] = float(task.loss(meta_head(features, batch), batch))
        return meta_head

    def other_train_batch(self, task, inputs: StepInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Features (a forward pass without gradients) of an end-task train batch drawn by (seed,
        step) from a shuffle of its own, so it is rarely the step's batch: a meta head fit on the
        very batch whose gradient the dev gradient is compared with pushed the end task's cosine
        negative (-0.21 against -0.05 on ACL-ARC, benchmarks/meta_head_probe.py). Every process
        draws and encodes the whole batch, so all train the same head."""
        update = inputs.step // self.update_every
        per_epoch = len(task.shuffled_batches("train", 0, task.batch_size))
        epoch, offset = divmod(update, per_epoch)
        indices = task.shuffled_batches("train", stable_seed("meta head", self.seed, epoch), task.batch_size)[offset]
        batch = to_device(task.collate("train", indices), inputs.accelerator.device)
        with torch.no_grad(), inputs.accelerator.autocast():
            return inputs.model.encode(batch), batch

    def dev_batch(self, task, inputs: StepInputs) -> dict[str, torch.Tensor]:
        """The dev set in length-bucketed batches, one per update, cycling through epochs of it: a
        random dev batch pads every example to its longest one, which made the dev gradient cost as
        much as the three task gradients together."""
        update = inputs.step // self.update_every
        per_epoch = len(task.shuffled_batches("dev", 0, self.dev_batch_size))
        epoch, offset = divmod(update, per_epoch)
        indices = task.shuffled_batches("dev", epoch, self.dev_batch_size)[offset]
        accelerator = inputs.accelerator
        batch = shard_rows(task.collate("dev", indices), accelerator.process_index, accelerator.num_processes)
        return to_device(batch, accelerator.device)

    def state_dict(self) -> dict:
        return {"logits": self.logits.tolist(), "cosines": self.cosines, "meta_head_losses": self.meta_head_losses}

    def load_state_dict(self, state: dict) -> None:
        if "logits" in state:
            self.logits = torch.tensor(state["logits"], dtype=torch.float64)
            self.cosines = state.get("cosines", {})
            self.meta_head_losses = state.get("meta_head_losses", {})


def _dot(gradient: list[torch.Tensor], other: list[torch.Tensor]) -> torch.Tensor:
    """Dot product of two gradients given as per-parameter tensors, as if each were one flat vector."""
    return sum(torch.vdot(a.reshape(-1), b.reshape(-1)) for a, b in zip(gradient, other))


def _norm(gradient: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(gradient)))


def _zeros_for_none(gradients, params: list) -> list[torch.Tensor]:
    """A parameter this loss does not reach has a zero gradient."""
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(gradients, params)]


def _gather_rows(features: torch.Tensor, batch: dict, accelerator) -> tuple[torch.Tensor, dict]:
    """The global batch from every process's rows (padded to the longest sequence of any process)."""
    features = accelerator.gather(accelerator.pad_across_processes(features.contiguous(), dim=1))
    gathered = {}
    for key, value in batch.items():
        if value.dim() > 1:
            value = accelerator.pad_across_processes(value.contiguous(), dim=1)
        gathered[key] = accelerator.gather(value)
    return features, gathered
