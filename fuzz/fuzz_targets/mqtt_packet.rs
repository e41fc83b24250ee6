#![no_main]
use drosera_sensor::protocols::mqtt;
use libfuzzer_sys::fuzz_target;

// A client's packets: the remaining-length varint (capped), CONNECT, SUBSCRIBE, UNSUBSCRIBE and
// PUBLISH bodies at MQTT 3.1.1 and 5.
fuzz_target!(|data: &[u8]| {
    if let Ok(Some((len, used))) = mqtt::remaining_length(data) {
        assert!(len <= mqtt::MAX_PACKET && (1..=4).contains(&used));
    }
    let _ = mqtt::parse_connect(data);
    for level in [4, 5] {
        if let Ok(sub) = mqtt::parse_subscribe(data, level) {
            assert!(sub.topics.len() <= mqtt::MAX_TOPICS && sub.topics.len() <= sub.count);
        }
        let _ = mqtt::parse_unsubscribe(data, level);
        let _ = mqtt::parse_publish(data.first().copied().unwrap_or(0) & 0x0f, data, level);
    }
});
