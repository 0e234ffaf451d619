"""Deliberate breaks, one for each promise: `make mutants` applies each to a temporary copy of the
repository and runs the tests named for it there, which must fail. A test that stays green with its
feature broken guards nothing.

A break whose text is no longer in its file stops the run with an error rather than passing: update
it along with the code. Not part of `make test` or CI (it runs the slow tests once per break).

    python tests/mutants.py                 # every break
    python tests/mutants.py resume ids      # the breaks whose promise names one of these words
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CAUGHT = 1  # pytest's exit status when tests ran and some failed
ERRORED = -1  # ours: pytest exited 1 for an error, not a failing test


@dataclass(frozen=True)
class Mutant:
    promise: str
    path: str
    edits: tuple[tuple[str, str], ...]
    """(text, replacement) pairs; each text must occur exactly once in the file."""
    tests: tuple[str, ...]
    """pytest node ids (or files) that must fail under the break."""


MUTANTS = [
    Mutant(
        "figures in the docs cannot drift: README's bits per byte are the committed metrics",
        "README.md",
        (("| modern + Muon, 230 steps (params.yaml) | ", "| modern + Muon, 230 steps (params.yaml) | 9"),),
        ("tests/test_docs_figures.py::test_the_samples_bits_per_byte_in_the_docs_are_the_committed_metrics",),
    ),
    Mutant(
        "Muon shared across ranks: each rank orthogonalises only its share of the matrices",
        "pipeline/training/muon.py",
        (("dist.is_initialized() and dist.get_world_size() > 1", "dist.is_initialized() and False"),),
        (
            "tests/test_muon.py::"
            "test_two_gloo_processes_share_the_orthogonalisation_and_step_as_one_process_even_across_a_resume",
        ),
    ),
    Mutant(
        "Muon's split_qkv orthogonalises Q, K and V apart",
        "pipeline/training/optimizers.py",
        (("blocks={w: 3 for w in model.qkv_matrices()}", "blocks={w: 1 for w in model.qkv_matrices()}"),),
        ("tests/test_model.py::test_muon_split_qkv_orthogonalises_each_attentions_q_k_and_v_apart",),
    ),
    Mutant(
        "exact resume: a resumed run trains only the steps left",
        "pipeline/training/train.py",
        (("ckpt_path=resume_from, weights_only=True", "ckpt_path=None, weights_only=True"),),
        ("tests/test_train.py::test_raising_max_steps_continues_the_run_as_if_it_had_never_stopped",),
    ),
    Mutant(
        "stage recovery: a download resumes from its partial file",
        "pipeline/ingest/download.py",
        (("offset = part.stat().st_size if part.exists() and state else 0", "offset = 0"),),
        ("tests/test_faults.py::test_a_download_killed_or_interrupted_mid_transfer_resumes_from_its_partial_file",),
    ),
    Mutant(
        "whole or nothing: no partial file ever sits at an output path",
        "pipeline/tokenizer/corpus.py",
        (
            (
                "    with files.replacing(output) as (tmp,):\n",
                "    output.parent.mkdir(parents=True, exist_ok=True)\n    for tmp in (output,):\n",
            ),
        ),
        (
            "tests/test_faults.py::test_stage_killed_or_interrupted_anywhere_is_finished_by_a_rerun_with_identical_bytes",
        ),
    ),
    Mutant(
        "exact ids: the compiled BPE gives SentencePiece's ids (a run of unknown characters is one piece)",
        "pipeline/encode/compiled_bpe.py",
        (("if not (unknown and after_unknown):", "if True:"),),
        ("tests/test_word_cache.py::test_generated_words_and_texts_get_sentencepieces_ids",),
    ),
    Mutant(
        "stale deps: every module a stage runs is one of its dvc.yaml deps",
        "dvc.yaml",
        (("        - pipeline/encode/compiled_bpe.py\n", ""),),
        ("tests/test_deps.py::test_every_module_a_stage_runs_is_in_its_deps_and_no_other",),
    ),
    Mutant(
        "bad input refused: a bad record stops pretokenize, naming the file and line",
        "pipeline/encode/pretokenize.py",
        (('            if self.on_bad_record == "error":', "            if False:"),),
        ("tests/test_pretokenize.py::test_bad_record_names_file_and_line_and_leaves_no_output",),
    ),
    Mutant(
        "a dead worker named: the death of an encoder stops the stage",
        "pipeline/core/workers.py",
        (("            if process.sentinel in ready:\n", "            if False:\n"),),
        (
            "tests/test_dead_workers.py::test_pretokenize_stops_within_seconds_naming_the_signal_when_a_worker_is_killed",
        ),
    ),
    Mutant(
        "a dead worker named: one killed inside its answer is named with its signal",
        "pipeline/core/workers.py",
        (("                except (EOFError, OSError):\n", "                except EOFError:\n"),),
        ("tests/test_workers.py::test_a_worker_killed_before_or_inside_its_answer_is_named_with_its_signal",),
    ),
    Mutant(
        "sampling seeded: the seed and the temperature decide the sample",
        "pipeline/model/gpt.py",
        (
            (
                "next_id = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)",
                "next_id = logits.argmax(dim=-1, keepdim=True)",
            ),
        ),
        ("tests/test_model.py::test_sampling_follows_its_seed_and_temperature_and_greedy_is_the_argmax",),
    ),
    Mutant(
        "a NaN stop keeps the last good checkpoint",
        "pipeline/training/module.py",
        (
            (
                '            raise PipelineError(\n                f"train: the loss became nan or inf',
                '            __import__("shutil").rmtree("data/model/checkpoints", ignore_errors=True)\n'
                '            raise PipelineError(\n                f"train: the loss became nan or inf',
            ),
        ),
        ("tests/test_train.py::test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint",),
    ),
    Mutant(
        "exact tokenizer: equal counts go to the pair of fewer code points, as spm_train's do",
        "pipeline/tokenizer/bpe_kernel.py",
        (("    if na != nb:\n        return na < nb\n", "    if na != nb:\n        return na > nb\n"),),
        ("tests/test_exact_bpe.py::test_the_exact_trainer_makes_spm_trains_model_from_the_sample_text",),
    ),
    Mutant(
        "exact tokenizer: a line of malformed UTF-8 is normalized as spm_train reads it",
        "pipeline/tokenizer/word_cutting.py",
        (("self.exact.normalize(text) if MALFORMED.search(text) else ", ""),),
        ("tests/test_exact_bpe.py::test_the_exact_trainer_makes_spm_trains_model_from_the_sample_text",),
    ),
    Mutant(
        "exact tokenizer: a line of exactly max_sentence_length bytes is kept, as spm_train keeps it",
        "pipeline/tokenizer/word_cutting.py",
        (("        if len(line) > self.max_bytes:", "        if len(line) >= self.max_bytes:"),),
        ("tests/test_exact_bpe.py::test_the_exact_trainer_makes_spm_trains_model_from_the_sample_text",),
    ),
    Mutant(
        "exact tokenizer: max_sentence_length counts bytes, not characters, as spm_train's does",
        "pipeline/tokenizer/word_cutting.py",
        (
            (
                "        if len(line) > self.max_bytes:",
                '        if len(line.decode("utf-8", "replace")) > self.max_bytes:',
            ),
        ),
        ("tests/test_exact_bpe.py::test_the_exact_trainer_makes_spm_trains_model_from_the_sample_text",),
    ),
    Mutant(
        "exact tokenizer: a line holding U+2585 is dropped wherever it holds it (at its end too)",
        "pipeline/tokenizer/word_cutting.py",
        (("        if RESERVED in line:", "        if line.startswith(RESERVED):"),),
        ("tests/test_exact_bpe.py::test_the_exact_trainer_makes_spm_trains_model_from_the_sample_text",),
    ),
    Mutant(
        "exact tokenizer: a line holding U+2585 is dropped wherever it holds it (at its start too)",
        "pipeline/tokenizer/word_cutting.py",
        (("        if RESERVED in line:", "        if line.endswith(RESERVED):"),),
        ("tests/test_exact_bpe.py::test_the_exact_trainer_makes_spm_trains_model_from_the_sample_text",),
    ),
    Mutant(
        "corpus: a line cut where it has no whitespace fits max_sentence_length (spm_train would drop it)",
        "pipeline/tokenizer/corpus.py",
        (("            cut = end\n", "            cut = end + 1\n"),),
        ("tests/test_exact_bpe.py::test_the_exact_trainer_makes_spm_trains_model_from_the_sample_text",),
    ),
    Mutant(
        "corpus: a long document's lines are cut and encoded a block at a time, not all at once",
        "pipeline/tokenizer/corpus.py",
        (("BLOCK_CHARS = 1 << 20", "BLOCK_CHARS = 1 << 40"),),
        ("tests/test_corpus.py::test_a_long_document_is_held_about_three_times_not_once_per_copy",),
    ),
    Mutant(
        "corpus: a long document's freed copies go back to the system, not into a heap kept by the process",
        "pipeline/tokenizer/corpus.py",
        (("    memory.return_large_frees()\n", ""),),
        ("tests/test_corpus.py::test_a_long_document_is_held_about_three_times_not_once_per_copy",),
    ),
    Mutant(
        "reader: a line spread over chunks is held once while its reader waits",
        "pipeline/ingest/jsonl.py",
        (("    pending.clear()\n", ""),),
        ("tests/test_corpus.py::test_a_long_document_is_held_about_three_times_not_once_per_copy",),
    ),
    Mutant(
        "records: a lone surrogate past a long text's first slice is named at its own character",
        "pipeline/ingest/records.py",
        (("            at = start + exc.start\n", "            at = exc.start\n"),),
        ("tests/test_jsonl.py::test_a_long_texts_utf8_length_and_lone_surrogate_are_found_past_its_first_slice",),
    ),
    Mutant(
        "words stage: spilled runs are merged into the table file a piece at a time, never held whole",
        "pipeline/tokenizer/word_counts.py",
        (
            (
                "        streamed = word_table.StreamedTable(runs_dir)\n"
                "        merge_runs([word_table.RunReader(run) for run in runs], streamed, spill_bytes)\n"
                "        return streamed.finish(output, full)\n",
                "        table = table_merge.merge([word_table.RunReader(run).read(1 << 62) for run in runs])\n"
                "        table.header = full\n"
                "        word_table.write(table, output)\n"
                "        return word_table.read_header(output)\n",
            ),
        ),
        ("tests/test_exact_bpe.py::test_tables_merge_and_spill_to_the_table_of_the_whole_text",),
    ),
    Mutant(
        "word tables: merging sums the counts of a word both tables hold",
        "pipeline/tokenizer/table_merge.py",
        (("total = len_a[i], count_a[i] + (count_b[j] if order == 0 else 0)", "total = len_a[i], count_a[i]"),),
        ("tests/test_exact_bpe.py::test_tables_merge_and_spill_to_the_table_of_the_whole_text",),
    ),
    Mutant(
        "word tables: one counted under other params is refused by name",
        "pipeline/tokenizer/word_table.py",
        (("        if made.get(name) != wanted[name]:", "        if False:"),),
        ("tests/test_exact_bpe.py::test_a_table_counted_under_other_params_is_refused_by_name",),
    ),
    Mutant(
        "pile-gpt spm-train records every field spm_train sets, as spm_train's model does",
        "pipeline/tokenizer/spm_train_command.py",
        (('"split_by_number", "split_digits",', '"split_by_number",'),),
        ("tests/test_exact_bpe.py::test_spm_train_command_takes_spm_trains_flags_and_writes_its_files",),
    ),
    Mutant(
        "DVC's cache links every output, a directory's files too: the raw shards are on disk once",
        ".dvc/config",
        (('type = "hardlink,symlink"', 'type = "reflink,hardlink,symlink"'),),
        ("tests/test_dvc_pipeline.py::test_every_output_is_a_link_to_dvcs_cache_not_a_second_copy",),
    ),
    Mutant(
        "deterministic outputs: no wall-clock figure in a file dvc.lock hashes",
        "pipeline/tokenizer/word_counts.py",
        (
            (
                '        "table_bytes": output.stat().st_size,\n',
                '        "table_bytes": output.stat().st_size,\n        "seconds": round(seconds, 1),\n',
            ),
        ),
        ("tests/test_dvc_pipeline.py::test_no_file_dvc_hashes_or_diffs_records_a_wall_clock_figure",),
    ),
    Mutant(
        "resume across world sizes: a job starts at the sample its checkpoint recorded",
        "pipeline/training/train.py",
        (
            (
                "tokenizer_model, vocab_size, decision.samples, windows_record",
                "tokenizer_model, vocab_size, decision.step * p.train.batch_size * p.train.grad_accum * world_size, "
                "windows_record",
            ),
        ),
        (
            "tests/test_distributed.py::"
            "test_a_run_killed_on_two_processes_resumes_on_one_and_back_on_two_training_an_uninterrupted_runs_windows",
        ),
    ),
    Mutant(
        "resume across world sizes: a job keeps the run's global batch",
        "pipeline/training/resume.py",
        (
            (
                "        batch = job_batch(global_batch, train.batch_size, world_size, origin)\n",
                "        batch = fresh_batch(train, world_size)\n",
            ),
        ),
        (
            "tests/test_distributed.py::"
            "test_a_run_killed_on_two_processes_resumes_on_one_and_back_on_two_training_an_uninterrupted_runs_windows",
            "tests/test_distributed.py::test_a_job_whose_devices_cannot_make_the_runs_global_batch_is_refused_naming_what_would",
        ),
    ),
    Mutant(
        "resume across world sizes: Lightning's micro-batch counts follow the new accumulation",
        "pipeline/training/resume.py",
        (("    if saved == grad_accum:\n        return\n", "    if True:\n        return\n"),),
        (
            "tests/test_distributed.py::"
            "test_a_run_killed_on_two_processes_resumes_on_one_and_back_on_two_training_an_uninterrupted_runs_windows",
        ),
    ),
    Mutant(
        "one decision: ranks that decided otherwise stop, naming the rank",
        "pipeline/training/distributed.py",
        (("        if differing:\n", "        if False:\n"),),
        (
            "tests/test_distributed.py::test_ranks_that_read_different_checkpoint_folders_stop_before_any_step_naming_the_rank",
        ),
    ),
    Mutant(
        "one decision: a rank that cannot read rank zero's folder stops",
        "pipeline/training/distributed.py",
        (("        if blind:\n", "        if False:\n"),),
        (
            "tests/test_distributed.py::test_ranks_that_read_different_checkpoint_folders_stop_before_any_step_naming_the_rank",
        ),
    ),
    Mutant(
        "preemption: SIGUSR1 ends in a checkpoint of that step in the run's folder",
        "pipeline/training/checkpoints.py",
        (("        trainer.save_checkpoint(last)\n", ""),),
        (
            "tests/test_preemption.py::"
            "test_sigusr1_on_slurm_checkpoints_in_the_runs_folder_requeues_and_the_next_job_resumes_to_the_same_weights",
        ),
    ),
    Mutant(
        "preemption: no checkpoint outside the run's folder is ever loaded",
        "pipeline/training/train.py",
        (("        default_root_dir=str(CHECKPOINT_DIR),", "        default_root_dir=str(MODEL_DIR),"),),
        (
            "tests/test_preemption.py::test_no_checkpoint_outside_the_runs_folder_is_ever_loaded_and_lightnings_own_is_refused",
        ),
    ),
    Mutant(
        "honest throughput: validations inside training are not training time",
        "pipeline/training/throughput.py",
        (("        if trainer.state.fn == TrainerFn.FITTING:", "        if trainer.training:"),),
        ("tests/test_throughput.py::test_tokens_per_s_and_mfu_count_training_time_not_the_validations_inside_it",),
    ),
    Mutant(
        "honest throughput: the lr of every parameter group is logged",
        "pipeline/training/throughput.py",
        (("enumerate(trainer.optimizers[0].param_groups)", "enumerate(trainer.optimizers[0].param_groups[:1])"),),
        (
            "tests/test_throughput.py::test_every_parameter_groups_lr_is_logged_and_every_step_lightning_logs_is_checked",
        ),
    ),
    Mutant(
        "honest throughput: every step Lightning logs is checked for a finite loss",
        "pipeline/training/module.py",
        (("        after % p.log_every == 0\n", "        step % p.log_every == 0\n"),),
        (
            "tests/test_throughput.py::test_every_parameter_groups_lr_is_logged_and_every_step_lightning_logs_is_checked",
        ),
    ),
    Mutant(
        "honest throughput: dense peaks, never the sparse figure",
        "pipeline/training/throughput.py",
        (
            (
                '        Peak(989.5e12, "nvidia.com/en-us/data-center/h200',
                '        Peak(1979e12, "nvidia.com/en-us/data-center/h200',
            ),
        ),
        ("tests/test_throughput.py::test_each_gpu_people_rent_gets_its_dense_bf16_peak",),
    ),
    Mutant(
        "honest throughput: the FLOPs per token are what a step computes",
        "pipeline/model/gpt.py",
        (
            (
                "        return 6 * self.n_params() + 12 * c.n_layer * c.n_embd * c.block_size + rope",
                "        return 6 * self.n_params() + rope",
            ),
        ),
        ("tests/test_throughput.py::test_flops_per_token_are_the_flops_a_training_step_computes",),
    ),
    Mutant(
        "the loss inside the forward: every chunk of tokens counts",
        "pipeline/model/loss.py",
        (
            (
                "        for start in range(0, n, chunk_rows):\n",
                "        for start in range(chunk_rows, n, chunk_rows):\n",
            ),
        ),
        ("tests/test_loss.py::test_the_loss_and_every_gradient_are_those_of_the_sliced_logits_in_fp32",),
    ),
    Mutant(
        "the loss inside the forward: the head's padding rows are no pieces",
        "pipeline/model/gpt.py",
        (("        head = self.lm_head.weight[: self.config.vocab_size]", "        head = self.lm_head.weight"),),
        ("tests/test_loss.py::test_the_loss_and_every_gradient_are_those_of_the_sliced_logits_in_fp32",),
    ),
    Mutant(
        "larger models: FSDP shards one block a unit",
        "pipeline/training/distributed.py",
        (("        auto_wrap_policy={Block},\n", "        auto_wrap_policy=None,\n"),),
        ("tests/test_distributed.py::test_fsdp_shards_one_block_a_unit_and_recomputes_block_activations_when_asked",),
    ),
    Mutant(
        "larger models: activation checkpointing recomputes each block",
        "pipeline/model/gpt.py",
        (
            (
                "        recompute = self.checkpoint_activations and self.training and torch.is_grad_enabled()",
                "        recompute = False",
            ),
        ),
        (
            "tests/test_distributed.py::test_activation_checkpointing_in_the_model_recomputes_each_block_and_leaves_the_gradients_exact",
        ),
    ),
    Mutant(
        "tests start every training on the code under test",
        "tests/helpers.py",
        (('    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])\n', ""),),
        ("tests/test_launchers.py::test_a_child_started_by_the_tests_of_another_checkout_imports_that_checkouts_code",),
    ),
    Mutant(
        "Megatron's index, byte for byte: sequence pointers are byte offsets into the .bin",
        "pipeline/encode/megatron_index.py",
        (
            (
                "ends = offset + np.cumsum(lengths, dtype=np.int64) * self.itemsize",
                "ends = offset + np.cumsum(lengths, dtype=np.int64)",
            ),
        ),
        ("tests/test_interop.py::test_the_index_is_megatrons_mmidx_byte_for_byte",),
    ),
    Mutant(
        "megatron-core reads every document of our uint32 arrays equal to ours (dtype code 4, int32)",
        "pipeline/encode/megatron_index.py",
        (('CODE_OF = {"uint16": 8, "uint32": 4}', 'CODE_OF = {"uint16": 8, "uint32": 5}'),),
        ("tests/test_interop.py::test_megatron_core_reads_every_document_of_our_array_equal_to_ours",),
    ),
    Mutant(
        "our readers find each document where the index's byte pointers say it starts",
        "pipeline/encode/token_files.py",
        (
            (
                "return Documents(np.asarray(index.pointers) // itemsize,",
                "return Documents(np.asarray(index.pointers),",
            ),
        ),
        ("tests/test_interop.py::test_our_reader_finds_each_documents_start_and_facts",),
    ),
    Mutant(
        "an imported pair of another vocabulary is refused, naming its tokenizer",
        "pipeline/tokenizer/vocabulary.py",
        (("        if mine != other:", "        if mine is None:"),),
        ("tests/test_megatron_import.py::test_a_tokenizer_of_another_vocabulary_is_refused_naming_it",),
    ),
    Mutant(
        "an imported document must end with the separator, or documents would bleed into each other",
        "pipeline/encode/megatron_import.py",
        (
            (
                'unended = np.flatnonzero((doc_tokens == 0) | (ids[np.maximum(ends - 1, 0)] != _pair["eos"]))',
                "unended = np.flatnonzero(doc_tokens == 0)",
            ),
        ),
        ("tests/test_megatron_import.py::test_documents_without_the_separator_are_refused",),
    ),
    Mutant(
        "zero_init starts the residual output projections at zero",
        "pipeline/model/gpt.py",
        (("            if residual and self.config.zero_init:", "            if False:"),),
        (
            "tests/test_model.py::test_zero_init_starts_projections_and_an_untied_head_at_zero_and_the_first_steps_train_them",
        ),
    ),
    Mutant(
        "Muon takes the momentum warm-up's value at every step, a resumed job's too",
        "pipeline/training/module.py",
        (
            (
                'group["momentum"] = muon_momentum(self.global_step, self.train_params)',
                'group["momentum"] = self.train_params.muon_momentum',
            ),
        ),
        ("tests/test_schedule.py::test_muon_uses_the_warm_up_momentum_at_every_step_also_after_a_resume_mid_warm_up",),
    ),
    Mutant(
        "the embedding trains at train.embedding_lr, scaled by the schedule",
        "pipeline/model/gpt.py",
        (('group("embedding", embedding, weight_decay, embedding_lr)', 'group("embedding", embedding, weight_decay)'),),
        ("tests/test_schedule.py::test_each_parameter_group_trains_at_its_own_peak_times_the_schedule",),
    ),
]


def copy_repository(destination: Path) -> None:
    """The tracked and untracked-not-ignored files, as a clean clone would have them."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    # a git repository of its own: the tests' repository copies (tests/repo.py) list files with git
    identity = {
        "GIT_AUTHOR_NAME": "m",
        "GIT_AUTHOR_EMAIL": "m@m",
        "GIT_COMMITTER_NAME": "m",
        "GIT_COMMITTER_EMAIL": "m@m",
    }
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "the repository before the break"]):
        subprocess.run(["git", *command], cwd=destination, env={**os.environ, **identity}, check=True)


def apply(mutant: Mutant, copy: Path) -> None:
    path = copy / mutant.path
    text = path.read_text()
    for old, new in mutant.edits:
        if text.count(old) != 1:
            raise SystemExit(
                f"error: {mutant.path}: the text to break appears {text.count(old)} times, not once; "
                f"update the break for {mutant.promise!r} in tests/mutants.py:\n{old}"
            )
        text = text.replace(old, new)
    path.write_text(text)


def run(mutant: Mutant) -> tuple[int, float, str]:
    """Apply the break to a copy, run its tests there; (pytest's exit status, seconds, output tail)."""
    with tempfile.TemporaryDirectory(prefix="mutant-") as directory:
        copy = Path(directory)
        copy_repository(copy)
        apply(mutant, copy)
        # stage scripts that tests start import `pipeline` from the copy, not from the installed project
        env = {**os.environ, "PYTHONPATH": str(copy), "PILE_GPT_PROGRESS": "0"}
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
        )
        output = result.stdout + result.stderr
        # caught: a test failed; an error (a fixture that could not even be set up) proves nothing
        if result.returncode == CAUGHT and (" error" in output.splitlines()[-1] or "failed" not in output):
            return ERRORED, time.monotonic() - started, output[-1500:]
        return result.returncode, time.monotonic() - started, output[-1500:]


def main(words: list[str]) -> int:
    chosen = [m for m in MUTANTS if not words or any(word in m.promise for word in words)]
    if not chosen:
        raise SystemExit(f"error: no break's promise names any of {words}")
    missed = 0
    for mutant in chosen:
        status, seconds, tail = run(mutant)
        verdict = (
            "caught"
            if status == CAUGHT
            else "MISSED"
            if status == 0
            else "ERROR"
            if status == ERRORED
            else f"ERROR (pytest exit {status})"
        )
        print(f"{verdict:>8}  {seconds:6.0f} s  {mutant.promise}  [{mutant.path}]", flush=True)
        if status != CAUGHT:
            missed += 1
            print("\n".join("          " + line for line in tail.splitlines()), flush=True)
    print(f"{len(chosen) - missed} of {len(chosen)} breaks caught by the tests named for them")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
