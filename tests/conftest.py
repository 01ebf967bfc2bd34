"""Shared fixtures: a tiny randomly initialised checkpoint, so tests never need the shipped model."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Respect OMP_NUM_THREADS when set: when other processes share the cores, two torch threads per process
# can thrash on tiny tensors.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1)))
# App tests run on eager model.eps: a background ONNX export per test app would only add CPU load.
# tests/test_app_client.py::test_app_switches_to_the_fast_path turns it on for one app.
os.environ.setdefault("DDPM_EXPLAINER_FAST", "0")

from explainer.model.checkpoint import load_model, save_checkpoint  # noqa: E402
from explainer.model.unet import UNet, UNetConfig  # noqa: E402

def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a test server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TINY = dict(image_size=28, in_channels=1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
            attention_levels=(1,), num_heads=2, num_classes=10, groups=4)


def make_tiny_checkpoint(folder, seed: int = 0, schedule: str = "linear", num_steps: int = 1000, **overrides):
    """Write a tiny random (but not all-zero) conditional U-Net checkpoint to ``folder``."""
    torch.manual_seed(seed)
    net = UNet(UNetConfig(**{**TINY, **overrides}))
    with torch.no_grad():  # zero-initialised output layers would make eps identically 0: perturb them
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    names = [str(i) for i in range(net.config.num_classes)]
    return save_checkpoint(folder, net, {"name": schedule, "num_steps": num_steps, "zero_terminal_snr": False}, names,
                           {"data": {"source": "random"}, "training": {"steps": 0}})


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a whole test module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``).

    As the app runs with half the cores on a 2-core CPU (server.launch.configure_threads); the checks do not depend
    on the thread count, and tiny ops can stall with 2 OpenMP threads when other processes share the cores.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def exact_fp32():
    """fp32 really in fp32 for a CUDA equivalence test (cuDNN's default TF32 would differ by about 1e-3)."""
    from explainer.accel.fast import exact_fp32 as exact
    with exact():
        yield


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_ckpt):
    return load_model(tiny_ckpt, device="cpu")


class StepCounter:
    """Counts the reverse steps the walks of a view module compute, by wrapping its ``samplers.sample`` (so a test
    can see that Stop stopped them); ``steps`` is read from any thread."""

    def __init__(self, monkeypatch, module):
        import threading
        self.steps, self._lock, inner = 0, threading.Lock(), module.sample

        def counted(*args, **kwargs):
            for record in inner(*args, **kwargs):
                with self._lock:
                    self.steps += 1
                yield record
        monkeypatch.setattr(module, "sample", counted)


# ---------------------------------------------------------------- test tiers
# Two tiers: ``python -m pytest`` runs everything; ``python -m pytest -m "not slow and not browser"`` runs every
# module's cheap tests, a couple of minutes on 2 cores. The slow tests (over about a second each, or a few seconds
# all cases together: subprocesses, whole walks and trainings, servers started per test, diffusers references) are
# named here, in one place, by module and test function (all its parametrized cases) or one case ("name[id]");
# "*" marks a whole module.
# Every module in tests/test_browser*.py is a browser test.
SLOW = {
    "test_app_client": {"test_app_switches_to_the_fast_path", "test_every_endpoint_works_with_its_defaults",
                        "test_missing_checkpoint", "test_python_app_py_serves_on_gradio_server_port",
                        "test_session_state_scrubber", "test_stop_really_stops_the_generator",
                        "test_the_defaults_fill_the_sessions_results", "test_walk_streams_several_outputs"},
    "test_app_models": {"test_a_broken_second_model_leaves_the_first_working",
                        "test_a_clipped_walk_says_so_and_differs",
                        "test_classes_are_checked_against_the_sessions_model", "test_colour_feature_maps",
                        "test_colour_noise_removal_of_a_held_out_emoji",
                        "test_colour_walk_scrubber_step_strip_and_gif", "test_colour_walks_side_by_side_stream",
                        "test_old_raw_http_calls_keep_working", "test_sessions_keep_their_own_model",
                        "test_switching_updates_the_class_menus_and_labels", "test_the_defaults_follow_the_model"},
    "test_bad_requests": {"test_every_wrong_value_of_every_endpoint_gets_a_clear_message"},
    "test_checkpoint": {"test_diffusers_unet_folder"},
    "test_browser_walk_payload": {"test_the_payloads_walk_ends_on_the_servers_picture",
                                  "test_the_vendored_runtime_is_the_one_its_readme_names"},
    "test_cli_figures": {"test_cli_figures_bad_image", "test_cli_figures_with_a_checkpoint",
                         "test_cli_figures_without_a_model", "test_figures_leave_no_pyplot_state"},
    "test_cli_sample": {"test_backends_draw_the_same_pictures", "test_bad_label",
                        "test_clipping_follows_the_card_unless_a_flag_says", "test_digit_names_are_their_indices",
                        "test_figures_with_a_colour_model", "test_label_by_name_on_a_colour_model",
                        "test_missing_checkpoint", "test_same_seed_same_output",
                        "test_the_printed_sampler_follows_the_flags", "test_unknown_backend_is_refused",
                        "test_unknown_class_names_list_the_classes", "test_writes_png_and_npz"},
    "test_defaults": {"test_one_computation_per_model_however_many_ask",
                      "test_the_cached_defaults_equal_a_fresh_computation"},
    "test_deploy": {"test_two_replicas_behind_nginx"},
    "test_distributed": {"test_a_batch_that_does_not_split_evenly_is_refused",
                         "test_resume_across_a_change_in_process_count",
                         "test_two_processes_take_the_step_of_one_process"},
    "test_evaluate": {"test_classifier_training_is_deterministic", "test_cli_evaluate",
                      "test_missing_classifier_is_trained_with_a_note", "test_report_is_deterministic",
                      "test_report_names_the_sampler_it_ran", "test_report_paths_are_repository_relative",
                      "test_report_structure", "test_shipped_classifier_loads_and_is_accurate"},
    "test_evaluate_colour": {"test_colour_report", "test_shipped_emoji_judge_reproduces_its_accuracy"},
    "test_fast": {"test_best_eps_fn_is_cached_per_model", "test_best_eps_fn_is_kept_on_the_model_and_leaves_with_it",
                  "test_gpu_network_call_traces_as_one_graph", "test_onnx_cache_is_keyed_by_weights",
                  "test_sampler_run_matches_eager", "test_unconditional_model"},
    "test_figures": {"test_captions_follow_the_variance_of_the_walk", "test_figure_walk_describes_the_sampler_it_ran",
                     "test_make_figures_is_seeded", "test_make_figures_with_model", "test_make_figures_without_model",
                     "test_reverse_walk_records_the_requested_steps"},
    "test_forward": {"test_chain_agrees_with_closed_form_in_distribution[cosine-1000]",
                     "test_chain_agrees_with_closed_form_in_distribution[linear-1000]"},
    "test_gpu_check_dry_run": {"test_gpu_check_dry_run_on_cpu"},
    "test_gpu_train_dry_run": {"test_gpu_train_dry_run_on_cpu"},
    "test_lab": {"test_metrics_show_what_the_training_points_themselves_score",
                 "test_the_exact_walk_ahead_stops_with_the_viewer_and_reports_errors",
                 "test_the_side_by_side_walk_equals_each_sampler_run_alone",
                 "test_the_warm_up_leaves_nothing_to_load_for_the_first_training",
                 "test_training_points_are_stratified_fresh_points_independent",
                 "test_walk_streams_records_and_measures",
                 "test_walk_without_a_network_runs_the_exact_denoiser_alone"},
    "test_lab_app": {"test_lab_train_with_its_defaults", "test_lab_walk_streams_and_the_scrubber_reads_it",
                     "test_lab_walk_with_its_defaults", "test_stop_cancels_the_walk",
                     "test_train_a_drawing_then_walk_with_it"},
    "test_memory": {"test_compute_sized_blocks_are_reused_without_page_faults"},
    "test_samplers": {"test_ddim_pipeline", "test_ddpm_pipeline_default_1000_steps", "test_ddpm_pipeline_respaced"},
    "test_sampler_eval": {"test_cli_evaluate_samplers", "test_evaluate_samplers_rejects_bad_arguments",
                          "test_report_is_deterministic_and_resumes", "test_report_structure",
                          "test_the_charts_data_equals_the_json"},
    "test_sessions": {"test_a_new_walk_in_the_same_session_stops_the_running_one",
                      "test_closed_sessions_are_forgotten_after_the_grace",
                      "test_closing_the_page_lets_the_housekeeper_forget_the_session",
                      "test_forgetting_frees_the_sessions_memory", "test_idle_sessions_are_forgotten",
                      "test_python_app_exits_cleanly_on_a_signal",
                      "test_sweeping_thread_runs_and_stops_with_its_owner",
                      "test_walks_queue_in_the_model_slots_and_report_their_place"},
    "test_tour": {"test_model_answers"},
    "test_training": {"test_cli_train_help_and_bad_data", "test_every_step_loss_is_recorded",
                      "test_init_from_copies_weights_and_refuses_another_architecture",
                      "test_resume_continues_from_saved_state", "test_train_on_npz",
                      "test_train_saves_loadable_checkpoint_and_resumes_exactly",
                      "test_training_never_silently_replaces_a_finished_model"},
    "test_unet": {"test_adamw_reduces_the_loss"},
    "test_views": {"test_a_slow_consumer_does_not_get_more_updates",
                   "test_clipped_reverse_walk_takes_the_posterior_mean_of_the_clipped_x0_hat",
                   "test_reverse_walk_streams_every_step"},
    "test_views_colour": {"test_colour_step_anatomy"},
    "test_walk": {"test_the_lab_walk_is_paced_like_the_reverse_walk"},
    "test_walk_graph": {"test_walk_draws_big_noise_in_chunks_with_the_same_picture",
                        "test_walk_on_cpu_equals_samplers_run"},
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects: the marks must be on the items by then
def pytest_collection_modifyitems(config, items):
    """Mark the browser and slow tests; warn about a SLOW name no test has (a renamed test would turn fast)."""
    seen = {}
    for item in items:
        module = item.path.stem
        if module.startswith("test_browser"):
            item.add_marker(pytest.mark.browser)
        name = getattr(item, "originalname", item.name)
        names = SLOW.get(module, ())
        if "*" in names or name in names or item.name in names:
            item.add_marker(pytest.mark.slow)
        seen.setdefault(module, set()).update((name, item.name))
    if not any("::" in arg for arg in config.args):  # (a run of chosen tests sees only some names)
        stale = sorted(f"{m}::{n}" for m in seen.keys() & SLOW.keys() for n in SLOW[m] - seen[m] - {"*"})
        if stale:
            import warnings
            warnings.warn(pytest.PytestWarning(f"tests/conftest.py SLOW names tests that do not exist: {stale}"))
