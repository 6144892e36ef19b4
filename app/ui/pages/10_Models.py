"""Models: the catalog, what is installed, verify and pull, and the model server's status."""

import httpx
import streamlit as st

from conclave.app.ui.common import page, settings
from conclave.local_models import catalog
from conclave.local_models.errors import ConclaveError

s = settings()
page("Models")
st.title("Models")
st.caption(f"Weights live under {catalog.models_dir(s.data_dir)}. Catalog models install from Python packages "
           "(no hub downloads); any GGUF path and any OpenAI-compatible endpoint work too.")

st.dataframe([{"name": m.name + (" (default)" if m.name == catalog.DEFAULT_MODEL else ""), "arch": m.arch,
               "installed": catalog.is_installed(m, s.data_dir), "size MB": round((m.size or 0) / 1e6),
               "packages": m.parts[0].dist if m.parts else "", "description": m.description}
              for m in catalog.CATALOG.values()], hide_index=True, width="stretch")

name = st.selectbox("Model", list(catalog.CATALOG))
spec = catalog.CATALOG[name]
left, right = st.columns(2)
if left.button("Verify (hash the weights in full)", disabled=not catalog.is_installed(spec, s.data_dir)):
    with st.spinner(f"hashing {name} …"):
        ok, msg = catalog.verify(spec, s.data_dir)
    (st.success if ok else st.error)(f"{name}: {msg}")
if right.button("Pull (install its packages and assemble the weights)"):
    bar = st.progress(0.0, text=f"installing {name} packages …")
    try:
        path = catalog.pull(spec, s.data_dir,
                            progress=lambda done, total: bar.progress(done / total if total else 0.0,
                                                                      text=f"assembling {spec.filename}"))
    except ConclaveError as e:
        st.error(str(e))
    else:
        st.success(f"{name}: {path} (sha256 verified)")

st.subheader("Model server")
url = s.openai_base_url.rstrip("/")
st.write(f"Endpoint: `{url}` (`conclave serve` serves local models there; set `CONCLAVE_OPENAI_BASE_URL`)")
if st.button("Check the server"):
    try:
        headers = {"Authorization": f"Bearer {s.openai_api_key.get_secret_value()}"} if s.openai_api_key else {}
        reply = httpx.get(f"{url}/models", headers=headers, timeout=3.0)
        reply.raise_for_status()
        st.success(f"up: serving {', '.join(m['id'] for m in reply.json().get('data', [])) or 'no models'}")
    except (httpx.HTTPError, ValueError) as e:
        st.error(f"not reachable: {e}")
