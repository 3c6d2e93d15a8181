from aragog.load_monitor.service import parse_triton_metrics

SAMPLE = """# HELP nv_inference_count Number of inferences performed
# TYPE nv_inference_count counter
nv_inference_count{model="llm-8b",version="1"} 12
nv_inference_count{model="llm-70b",version="1"} 3
# HELP nv_inference_request_duration_us Cumulative inference request duration
# TYPE nv_inference_request_duration_us counter
nv_inference_request_duration_us{model="llm-8b",version="1"} 120000
# HELP nv_inference_pending_request_count Instantaneous number of pending requests
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model="llm-70b",version="1"} 2
# HELP nv_gpu_utilization GPU utilization
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="x"} 0.5
"""


def test_parse_triton_metrics_per_model():
    m = parse_triton_metrics(SAMPLE)
    assert m["llm-8b"]["count"] == 12
    assert m["llm-8b"]["request_us"] == 120000
    assert m["llm-70b"]["pending"] == 2
    assert set(m) == {"llm-8b", "llm-70b"}
