def test_demo_import_and_preview(client, auth, demo_data):
    r = client.get("/api/v1/hosts", headers=auth)
    assert r.status_code == 200
    assert [h["serial"] for h in r.get_json()["hosts"]] == ["712DM2Y", "SN-NEW-0001", "SN-WEB-0001"]
    r = client.get("/api/v1/hosts/712DM2Y/kickstart", headers=auth)
    assert r.status_code == 200
    assert "timesource --ntp-server=10.1.0.1" in r.text


def test_live_server(live_server, admin_token):
    import requests
    r = requests.get(live_server.url + "/api/v1/hosts", headers={"Authorization": f"Bearer {admin_token}"})
    assert r.status_code == 200
