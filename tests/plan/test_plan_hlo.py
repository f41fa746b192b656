"""Collectives counted in compiled HLO text: loop bodies count once per trip, bytes from shapes."""

from qwen3_jax.plan import hlo

TEXT = """HloModule m

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(%a, %b)
}

%cond (p: (s32[], bf16[4,8])) -> pred[] {
  %p = (s32[], bf16[4,8]) parameter(0)
  %c = s32[]{:T(128)} constant(6)
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %lt = pred[] compare(%i, %c), direction=LT
}

%body (p: (s32[], bf16[4,8])) -> (s32[], bf16[4,8]) {
  %p = (s32[], bf16[4,8]) parameter(0)
  %x = bf16[2,8]{1,0:T(8,128)(2,1)} get-tuple-element(%p), index=1
  %ag = bf16[4,8]{1,0:T(8,128)(2,1)} all-gather(%x), channel_id=1, replica_groups={{0,1}}, dimensions={0}
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %t = (s32[], bf16[4,8]) tuple(%i, %ag)
}

ENTRY %main (x: f32[16,4], y: (s32[], bf16[4,8])) -> f32[4,4] {
  %x = f32[16,4]{1,0} parameter(0)
  %y = (s32[], bf16[4,8]) parameter(1)
  %w = (s32[], bf16[4,8]) while(%y), condition=%cond, body=%body
  %rs = f32[4,4]{1,0} reduce-scatter(%x), channel_id=2, replica_groups={{0,1,2,3}}, dimensions={0}, to_apply=%add
  %ars = f32[4,4]{1,0} all-reduce-start(%rs), channel_id=3, to_apply=%add
  ROOT %ard = f32[4,4]{1,0} all-reduce-done(%ars)
}
"""


def test_counts_trips_and_bytes():
    r = hlo.collectives(TEXT)
    ops = r["ops"]
    assert ops["all-gather"] == {"count": 1, "executed": 6, "bytes": 6 * 4 * 8 * 2}
    assert ops["reduce-scatter"] == {"count": 1, "executed": 1, "bytes": 16 * 4 * 4}  # the input is larger
    assert ops["all-reduce"] == {"count": 1, "executed": 1, "bytes": 4 * 4 * 4}  # counted at the start only
    assert r["unknown_loops"] == []
    assert r["in_loops"] == {"all-gather": 1}


def test_unknown_trip_count_is_reported():
    text = TEXT.replace("direction=LT", "direction=NE")
    r = hlo.collectives(text)
    assert r["ops"]["all-gather"]["executed"] == 1 and r["unknown_loops"] == ["w"]


def test_all_gathers_of_finds_a_weight_shape():
    assert hlo.all_gathers_of(TEXT, (4, 8)) == [("ag", "bf16[4,8]{1,0:T(8,128)(2,1)}")]
    assert hlo.all_gathers_of(TEXT, (16, 4)) == []
