"""No debug package: types from the target's own BTF, symbols from kallsyms (issue 15).

On every 6.1+ lab vmcore, every command gives the same output with the kernel's BTF as with the DWARF
of the -dbg package (``info`` apart from where its types came from), whether BTF is the fallback (no
DWARF found), forced (``--types btf``) or fills in only the modules (vmlinux DWARF, module BTF).  The
declared globals agree with DWARF on every kernel.  5.10 dumps (no kallsyms in VMCOREINFO) get a clear
message naming the debug package.  Bad BTF, a wrong declaration and unlocatable kallsyms in a real dump
are errors, never a traceback or a misread.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import struct
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import drgn
import pytest

from skbinspect.target.declarations import DECLARATIONS, Declaration, DeclarationError, DeclaredGlobals
from skbinspect.target.opener import Target, kernel_version, open_target
from tests.conftest import assert_clean_error, lab_vmcore_for, run_skbinspect
from tests.vmcores.config import KERNELS, kernel_names
from tests.vmcores.corrupt import _loads
from tests.vmcores.kdump import kdump_compressed
from tests.vmcores.kernels import LabError
from tests.vmcores.lab import LabVmcore

#: every command and option set of the byte-identity baseline
COMMANDS = [
    "info",
    "ring",
    "ring -e --stale",
    "ring tap0 -e",
    "ring tapmq --no-holders",
    "reasons",
    "reasons FULL_RING",
    "reasons --tuntap",
    "stats",
    "stats --nonzero",
    "trace",
    "trace --stacks",
    "trace --all-instances",
    "trace -i skbinst --stacks",
    "trace --last 20 --since 0",
    "trace --cpu 0 --event skb:kfree_skb",
    "drops",
    "drops --all-instances --stacks 5",
    "drops --reason FULL_RING",
    "drops --no-timeline",
    "report",
    "report --no-stale",
    "report -i skbinst",
]

#: VMCOREINFO has kallsyms from Linux 6.0; module BTF exists from 5.11
OLD_SERIES = ("5.10",)


def btf_kernels() -> List[str]:
    return [k for k in kernel_names() if KERNELS[k].series not in OLD_SERIES]


def old_kernels() -> List[str]:
    return [k for k in kernel_names() if KERNELS[k].series in OLD_SERIES]


def run_in_process(target: Target, args: List[str]) -> Tuple[int, str, str]:
    """A command on an opened target, as the drgn plugin runs it (one program for many commands)."""
    from skbinspect.cli import State, run

    state = State(None, None, (), True, False)
    state.prog_factory = lambda: target
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = run(args, obj=state)
    return rc, out.getvalue(), err.getvalue()


def all_outputs(target: Target) -> Dict[Tuple[str, bool], Tuple[int, str, str]]:
    return {
        (cmd, js): run_in_process(target, (["--json"] if js else []) + cmd.split())
        for cmd in COMMANDS
        for js in (True, False)
    }


_dwarf: Dict[str, Dict[Tuple[str, bool], Tuple[int, str, str]]] = {}


def dwarf_outputs(lab: LabVmcore) -> Dict[Tuple[str, bool], Tuple[int, str, str]]:
    if lab.vmcore not in _dwarf:
        t = open_target(lab.vmcore, symbols=lab.symbols, default_symbols=False, types="dwarf")
        assert not t.debug.sources
        _dwarf[lab.vmcore] = all_outputs(t)
    return _dwarf[lab.vmcore]


def without_debug_fields(info: Dict[str, Any]) -> Dict[str, Any]:
    info = dict(info)
    info.pop("vmlinux_debug_file")
    info.pop("debug_sources", None)
    info["modules"] = [{k: v for k, v in m.items() if k != "debug_file"} for m in info["modules"]]
    return info


def open_mode(lab: LabVmcore, mode: str) -> Target:
    if mode == "fallback":  # no -s, --no-default-symbols: no DWARF anywhere
        return open_target(lab.vmcore, default_symbols=False)
    if mode == "forced":  # DWARF given but --types btf
        return open_target(lab.vmcore, symbols=lab.symbols, default_symbols=False, types="btf")
    # vmlinux DWARF only: the modules' types from BTF
    return open_target(lab.vmcore, symbols=[lab.kernel.debug_vmlinux], default_symbols=False)


@pytest.mark.parametrize("mode", ["fallback", "forced", "modules"])
@pytest.mark.parametrize("name", btf_kernels())
def test_btf_gives_the_same_outputs_as_dwarf(name: str, mode: str) -> None:
    lab = lab_vmcore_for(name)
    want = dwarf_outputs(lab)
    target = open_mode(lab, mode)
    sources = target.debug.sources
    if mode == "modules":
        assert sources["vmlinux"]["types"].startswith("DWARF ")
    else:
        assert sources["vmlinux"] == {"types": "BTF from the dump", "symbols": "kallsyms from the dump"}
        assert target.debug.vmlinux is None
    for m in target.debug.modules.values():  # the lab loads every module skbinspect reads
        assert m.path is None and m.btf == "BTF from the dump", m
        assert sources[m.name] == {"types": "BTF from the dump", "symbols": "kallsyms from the dump"}
    got = all_outputs(target)
    for (cmd, js), (rc, out, err) in want.items():
        g_rc, g_out, g_err = got[(cmd, js)]
        what = f"{name} {mode}: {'--json ' if js else ''}{cmd}"
        assert g_rc == rc == 0, (what, g_err)
        if cmd != "info":
            assert g_out == out, what
            assert g_err == err, what
        elif js:
            dw, bt = json.loads(out), json.loads(g_out)
            assert without_debug_fields(bt) == without_debug_fields(dw), what
            assert bt["missing_debug_info"] == [] and bt["warnings"] == []
            assert "debug_sources" not in dw and bt["debug_sources"] == sources
        else:
            assert "BTF from the dump" in g_out


def assert_same_outputs(
    want: Dict[Tuple[str, bool], Tuple[int, str, str]],
    got: Dict[Tuple[str, bool], Tuple[int, str, str]],
    what: str,
) -> None:
    for (cmd, js), (rc, out, err) in want.items():
        g_rc, g_out, g_err = got[(cmd, js)]
        which = f"{what}: {'--json ' if js else ''}{cmd}"
        assert g_rc == rc == 0, (which, g_err)
        if cmd != "info":
            assert g_out == out, which
            assert g_err == err, which
        elif js:
            assert without_debug_fields(json.loads(g_out)) == without_debug_fields(json.loads(out)), which


@pytest.mark.parametrize("name", btf_kernels())
def test_kdump_compressed_dump(name: str) -> None:
    """The same dump compressed by makedumpfile: BTF from it gives what DWARF gives."""
    lab = lab_vmcore_for(name)
    try:
        kdump = kdump_compressed(lab)
    except LabError as e:
        pytest.fail(f"no kdump-compressed dump for {name}: {e}", pytrace=False)
    dwarf = open_target(kdump, symbols=lab.symbols, default_symbols=False, types="dwarf")
    btf = open_target(kdump, default_symbols=False)
    assert btf.vmcore is not None and btf.vmcore.format == "kdump"
    assert btf.debug.sources["vmlinux"] == {"types": "BTF from the dump", "symbols": "kallsyms from the dump"}
    assert all(m.btf == "BTF from the dump" for m in btf.debug.modules.values())
    assert_same_outputs(all_outputs(dwarf), all_outputs(btf), f"{name} kdump")


@pytest.mark.parametrize("name", btf_kernels())
def test_cli_falls_back_to_btf_and_says_so(name: str) -> None:
    """As a user runs it: no debug package anywhere, no option."""
    lab = lab_vmcore_for(name)
    p = run_skbinspect("-c", lab.vmcore, "--no-default-symbols", "--json", "info")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["vmlinux_debug_file"] is None and info["missing_debug_info"] == []
    assert info["debug_sources"]["vmlinux"] == {
        "types": "BTF from the dump",
        "symbols": "kallsyms from the dump",
    }
    assert info["debug_sources"]["tun"]["types"] == "BTF from the dump"
    p = run_skbinspect("-c", lab.vmcore, "--no-default-symbols", "info")
    assert p.returncode == 0 and "vmlinux types" in p.stdout and "BTF from the dump" in p.stdout
    # and the DWARF run's info is what it always was: no new key
    p = run_skbinspect("-c", lab.vmcore, *sum((["-s", s] for s in lab.symbols), []), "--json", "info")
    assert p.returncode == 0 and "debug_sources" not in json.loads(p.stdout)


@pytest.mark.parametrize("name", old_kernels())
def test_5_10_dump_without_dwarf_names_the_package(name: str) -> None:
    """5.10: no kallsyms in VMCOREINFO (they arrived in 6.0), so BTF cannot stand in for DWARF in a dump."""
    lab = lab_vmcore_for(name)
    release = lab.truth["release"]
    for args in (
        ["--no-default-symbols"],
        ["--types", "btf"],
        ["--types", "btf", "-s", lab.kernel.debug_vmlinux],
    ):
        p = run_skbinspect("-c", lab.vmcore, *args, "ring")
        err = assert_clean_error(p, "kallsyms", "VMCOREINFO", "6.0", f"linux-image-{release}-dbg", code=3)
        assert err.count("\n") <= 2, err
    # vmlinux DWARF without the modules': 5.10 has no module BTF to fill in, as before
    p = run_skbinspect(
        "-c", lab.vmcore, "--no-default-symbols", "-s", lab.kernel.debug_vmlinux, "--json", "info"
    )
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert "tun" in info["missing_debug_info"] and "debug_sources" not in info


def test_declarations_agree_with_dwarf(lab_vmcore: LabVmcore) -> None:
    """Each declared global, typed from BTF, has DWARF's type (size, kind, name, address) on every lab
    kernel, 5.10 included (its BTF read through DWARF's symbols, as on a live 5.10 machine)."""
    from drgn.helpers.linux.list import list_for_each_entry

    from skbinspect.target.btf import Btf, BtfTypes, register_btf

    d = open_target(lab_vmcore.vmcore, symbols=lab_vmcore.symbols, default_symbols=False, types="dwarf").prog
    p = drgn.Program()
    p.set_core_dump(lab_vmcore.vmcore)

    def symbols(prog: drgn.Program, name: Any, address: Any, one: bool) -> List[drgn.Symbol]:
        try:
            if address is not None:
                return d.symbols(address)
            return d.symbols(name) if name is not None else d.symbols()
        except LookupError:
            return []

    p.register_symbol_finder("dwarf-symbols", symbols, enable_index=0)
    start, stop = d.symbol("__start_BTF").address, d.symbol("__stop_BTF").address
    types = BtfTypes(p, Btf(d.read(start, stop - start)))
    register_btf(p, types)
    try:
        for bm in list_for_each_entry("struct btf_module", d["btf_modules"].address_of_(), "list"):
            blob = d.read(bm.btf.data.value_(), bm.btf.data_size.value_())
            types.add_module(Btf(blob, bm.module.name.string_().decode(), types.vmlinux))
    except LookupError:
        assert KERNELS[lab_vmcore.kernel.name].series in OLD_SERIES  # no module BTF before 5.11
    g = DeclaredGlobals(p, types, kernel_version(d))
    assert g.verify() == []
    checked = 0
    for name in sorted(g.by_name):
        try:
            dv = d[name]
        except LookupError:
            with pytest.raises(LookupError):
                d.symbol(name)  # not in this kernel at all
            continue
        bo = g.object(name)
        if bo is None:  # only where BTF lacks the type: a module's, on 5.10
            assert g.by_name[name].module and KERNELS[lab_vmcore.kernel.name].series in OLD_SERIES, name
            continue
        assert bo.address_ == dv.address_, name
        dt, bt = dv.type_.unaliased(), bo.type_.unaliased()
        assert dt.kind == bt.kind, name
        if bt.kind == drgn.TypeKind.ARRAY and bt.length is None:  # declared without a length (a string)
            assert drgn.sizeof(bt.type) == drgn.sizeof(dt.type), name
        else:
            assert drgn.sizeof(bo.type_) == drgn.sizeof(dv.type_), name
            assert bo.type_.type_name() == dv.type_.type_name(), name
        checked += 1
    assert checked >= 40


# ---- bad input in a real dump -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dump_copy(tmp_path_factory: pytest.TempPathFactory, default_lab_vmcore: LabVmcore) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("btf") / "vmcore"
    shutil.copyfile(default_lab_vmcore.vmcore, path)
    yield path
    path.unlink()


@contextlib.contextmanager
def patched(core: Path, offset: int, data: bytes) -> Iterator[None]:
    with open(core, "r+b") as f:
        f.seek(offset)
        old = f.read(len(data))
        f.seek(offset)
        f.write(data)
    try:
        yield
    finally:
        with open(core, "r+b") as f:
            f.seek(offset)
            f.write(old)


def file_offset(lab: LabVmcore, core: Path, address: int) -> int:
    """Offset in the ELF core of kernel virtual ``address`` (through the page tables)."""
    from drgn.helpers.linux.mm import follow_phys

    prog = open_target(lab.vmcore, symbols=lab.symbols, default_symbols=False, types="dwarf").prog
    phys = follow_phys(prog["init_mm"].address_of_(), address).value_()
    for paddr, off, size in _loads(core):
        if paddr <= phys < paddr + size:
            return off + phys - paddr
    raise AssertionError(f"{address:#x} is not in the dump")


def test_corrupt_btf_in_a_dump_is_a_clear_error(dump_copy: Path, default_lab_vmcore: LabVmcore) -> None:
    lab = default_lab_vmcore
    prog = open_target(lab.vmcore, symbols=lab.symbols, default_symbols=False, types="dwarf").prog
    start = prog.symbol("__start_BTF").address
    off = file_offset(lab, dump_copy, start)
    with open(dump_copy, "rb") as f:
        f.seek(off)
        hdr = struct.unpack("<HBBIIIII", f.read(24))
    type_len = hdr[5]
    cases = [
        (off, b"\x00\x00", "not BTF"),  # magic
        (off + 12, struct.pack("<I", type_len + (64 << 20)), "truncated"),  # type section past the end
        (off + 24 + 4, struct.pack("<I", 30 << 24), "unknown kind 30"),  # the first type's kind
    ]
    for where, data, words in cases:
        with patched(dump_copy, where, data):
            p = run_skbinspect("-c", str(dump_copy), "--no-default-symbols", "ring")
            assert_clean_error(p, "BTF of vmlinux", words, code=3)


def test_unlocatable_kallsyms_in_a_dump_is_a_clear_error(
    dump_copy: Path, default_lab_vmcore: LabVmcore
) -> None:
    """VMCOREINFO without kallsyms_names (as before 6.0): the message says what is missing and what to
    install."""
    data = dump_copy.read_bytes()[: 1 << 20]  # the notes are at the start of an ELF core
    key = b"SYMBOL(kallsyms_names)="
    pos = data.find(key)
    assert pos > 0
    with patched(dump_copy, pos, b"SYMBOL(kallsyms_nXmes)="):
        p = run_skbinspect("-c", str(dump_copy), "--no-default-symbols", "--json", "stats")
        release = default_lab_vmcore.truth["release"]
        assert_clean_error(p, "kallsyms", "VMCOREINFO", f"linux-image-{release}-dbg", code=3)


def test_declaration_that_disagrees_with_its_symbol_is_an_error(default_lab_vmcore: LabVmcore) -> None:
    lab = default_lab_vmcore
    t = open_target(lab.vmcore, default_symbols=False, types="btf")
    bad = [
        Declaration("init_net", "struct net *"),  # a pointer where the kernel has the structure
        Declaration("jiffies_64", "struct net"),  # far larger
        Declaration("tun_fops", "struct net_device", module="tun"),  # not the module symbol's size
    ]
    g = DeclaredGlobals(t.prog, None, kernel_version(t.prog), bad)
    for d in bad:
        with pytest.raises(DeclarationError) as e:
            g.object(d.name)
        assert d.name in str(e.value) and "does not match this kernel" in str(e.value)
    # the table's own declarations fit
    assert DeclaredGlobals(t.prog, None, kernel_version(t.prog), DECLARATIONS).verify() == []


# ---- a running guest over QMP -------------------------------------------------------------------------

LIVE_COMMANDS = [
    "info",
    "ring",
    "ring -e --stale",
    "reasons",
    "reasons --tuntap",
    "stats",
    "trace",
    "drops",
    "report",
]


def _qmp(guest: Any, command: str) -> None:
    from tests.vmcores.qemu import QMP

    q = QMP(guest.qmp_socket)
    try:
        q.command(command)
    finally:
        q.close()


def _live_outputs(guest: Any, **kw: Any) -> Dict[Tuple[str, bool], Tuple[int, str, str]]:
    """Every live command on a target opened over QMP; the target (and its QMP connection: QEMU serves
    one client at a time) is closed before returning."""
    import gc

    target = open_target(qemu=guest.qmp_socket, default_symbols=False, **kw)
    try:
        if kw.get("types") != "dwarf":
            sources = target.debug.sources
            assert sources["vmlinux"] == {
                "types": "BTF from the guest's memory",
                "symbols": "kallsyms from the guest's memory",
            }, sources
            assert sources["tun"]["types"] == "BTF from the guest's memory"
        return {
            (cmd, js): run_in_process(target, (["--json"] if js else []) + cmd.split())
            for cmd in LIVE_COMMANDS
            for js in (True, False)
        }
    finally:
        del target
        gc.collect()


def test_qmp_guest_btf_gives_the_same_outputs_as_dwarf(live_lab_guest: Any, lab_kernel_name: str) -> None:
    """A running guest, paused for the comparison (its memory must not change between the two reads):
    BTF and kallsyms from its memory over QMP give what DWARF gives; on 5.10, the clear message."""
    g = live_lab_guest
    if KERNELS[lab_kernel_name].series in OLD_SERIES:
        p = run_skbinspect("--qemu", g.qmp_socket, "--no-default-symbols", "ring")
        assert_clean_error(p, "kallsyms", "VMCOREINFO", f"linux-image-{g.kernel.release}-dbg", code=3)
        return
    _qmp(g, "stop")
    try:
        want = _live_outputs(g, symbols=g.symbols, types="dwarf")
        got = _live_outputs(g)
    finally:
        _qmp(g, "cont")
    for (cmd, js), (rc, out, err) in want.items():
        g_rc, g_out, g_err = got[(cmd, js)]
        which = f"{lab_kernel_name} qmp: {'--json ' if js else ''}{cmd}"
        assert g_rc == rc, (which, err, g_err)
        if cmd in ("info", "ring", "reasons", "stats"):
            assert rc == 0, (which, err)
        if cmd != "info":
            assert (g_out, g_err) == (out, err), which
        elif js:
            assert without_debug_fields(json.loads(g_out)) == without_debug_fields(json.loads(out)), which
